// A small Markdown renderer for model answers: fenced code, headings, lists, quotes, tables, rules, paragraphs,
// and inline code, bold, italic, strikethrough and links. It builds DOM nodes and sets text with text nodes only,
// never innerHTML, so nothing a model writes can become markup or script. An unclosed code fence renders as code
// so far: answers are re-rendered as they stream in.

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?/;
const BULLET = /^\s{0,3}[-*+]\s+/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const SAFE_LINK = /^(https?:|mailto:|\/|#)/i;

const INLINE = [
  ["code", /`([^`\n]+)`/],
  ["link", /\[([^\]\n]+)\]\(([^)\s]+)\)/],
  ["strong", /\*\*(?=\S)([^]*?\S)\*\*|__(?=\S)([^]*?\S)__/],
  ["em", /\*(?=\S)([^*]*?\S)\*|(?<!\w)_(?=\S)([^_]*?\S)_(?!\w)/],
  ["del", /~~(?=\S)([^]*?\S)~~/],
];

function element(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

function inlineNode(kind, match) {
  if (kind === "code") return element("code", match[1]);
  if (kind === "link") {
    const [, text, href] = match;
    if (!SAFE_LINK.test(href)) return document.createTextNode(text);
    const link = inline(text, element("a"));
    link.href = href;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    return link;
  }
  return inline(match[1] ?? match[2], element(kind));
}

/** Append ``text`` to ``parent`` with its inline formatting; the earliest match wins, ties in INLINE's order. */
export function inline(text, parent) {
  let rest = text;
  while (rest) {
    let best = null;
    for (const [kind, pattern] of INLINE) {
      const match = pattern.exec(rest);
      if (match && (best === null || match.index < best.match.index)) best = { kind, match };
    }
    if (best === null) break;
    parent.append(rest.slice(0, best.match.index), inlineNode(best.kind, best.match));
    rest = rest.slice(best.match.index + best.match[0].length);
  }
  if (rest) parent.append(rest);
  return parent;
}

function lines(parent, texts) {
  texts.forEach((text, index) => {
    if (index) parent.append(element("br"));
    inline(text, parent);
  });
  return parent;
}

function cells(line) {
  return line
    .trim()
    .replace(/^\||\|$/g, "")
    .split("|")
    .map((cell) => cell.trim());
}

function table(rows) {
  const head = element("tr", ...cells(rows[0]).map((cell) => inline(cell, element("th"))));
  const body = rows.slice(2).map((row) => element("tr", ...cells(row).map((cell) => inline(cell, element("td")))));
  return element("table", element("thead", head), element("tbody", ...body));
}

function startsBlock(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    BULLET.test(line) ||
    NUMBERED.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_RULE.test(next))
  );
}

/** Consecutive lines from ``start`` that ``keep`` accepts. */
function take(source, start, keep) {
  let end = start;
  while (end < source.length && keep(source[end], end)) end += 1;
  return source.slice(start, end);
}

function codeBlock(source, start) {
  const [, fence, language] = FENCE.exec(source[start]);
  const closing = new RegExp(`^\\s{0,3}${fence[0]}{${fence.length},}\\s*$`);
  const body = take(source, start + 1, (line) => !closing.test(line));
  const code = element("code", body.join("\n"));
  if (language) code.className = `language-${language}`;
  const end = start + 1 + body.length + (start + 1 + body.length < source.length ? 1 : 0);
  return [element("pre", code), end];
}

function list(source, start) {
  const numbered = NUMBERED.test(source[start]);
  const marker = numbered ? NUMBERED : BULLET;
  const node = element(numbered ? "ol" : "ul");
  if (numbered && NUMBERED.exec(source[start])[1] !== "1") node.start = Number(NUMBERED.exec(source[start])[1]);
  let index = start;
  while (index < source.length && marker.test(source[index])) {
    const item = [source[index].replace(marker, "")];
    index += 1;
    while (index < source.length && /^\s{2,}\S/.test(source[index]) && !marker.test(source[index])) {
      item.push(source[index].trim());
      index += 1;
    }
    node.append(lines(element("li"), item));
  }
  return [node, index];
}

function block(source, index) {
  const line = source[index];
  if (FENCE.test(line)) return codeBlock(source, index);
  const heading = HEADING.exec(line);
  if (heading) return [inline(heading[2], element(`h${heading[1].length}`)), index + 1];
  if (RULE.test(line)) return [element("hr"), index + 1];
  if (QUOTE.test(line)) {
    const quoted = take(source, index, (text) => QUOTE.test(text));
    return [element("blockquote", render(quoted.map((text) => text.replace(QUOTE, "")).join("\n"))), index + quoted.length];
  }
  if (BULLET.test(line) || NUMBERED.test(line)) return list(source, index);
  if (line.includes("|") && TABLE_RULE.test(source[index + 1] ?? "")) {
    const rows = take(source, index, (text, at) => at < index + 2 || (text.includes("|") && text.trim() !== ""));
    return [table(rows), index + rows.length];
  }
  const paragraph = take(
    source,
    index,
    (text, at) => text.trim() !== "" && (at === index || !startsBlock(text, source[at + 1])),
  );
  return [lines(element("p"), paragraph.map((text) => text.trim())), index + paragraph.length];
}

/** ``text`` (Markdown) as a fragment of DOM nodes. */
export function render(text) {
  const fragment = document.createDocumentFragment();
  const source = text.replace(/\r\n?/g, "\n").split("\n");
  let index = 0;
  while (index < source.length) {
    if (source[index].trim() === "") {
      index += 1;
      continue;
    }
    const [node, next] = block(source, index);
    fragment.append(node);
    index = next;
  }
  return fragment;
}

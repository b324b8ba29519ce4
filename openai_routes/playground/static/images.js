// The images attached to the next user message: read as data URLs (what the request carries, as OpenAI's image_url
// parts) and shown as thumbnails (blob: URLs, which the page's content security policy allows for images only).

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"]; // what the server decodes

export function thumbnail(url) {
  const image = document.createElement("img");
  image.className = "thumb";
  image.src = url;
  image.alt = "attached image";
  return image;
}

function dataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export class Attachments {
  /** ``list``: the element (a <ul>) that shows them; ``changed``: called after every change. */
  constructor(list, changed) {
    this.list = list;
    this.changed = changed;
    this.images = []; // {url: a data URL, thumb: a blob URL}
  }

  /** Adds ``files`` (a File array); an error names what was left out (not an image the server takes). */
  async add(files) {
    const images = files.filter((file) => IMAGE_TYPES.includes(file.type));
    const added = await Promise.all(
      images.map(async (file) => ({ url: await dataURL(file), thumb: URL.createObjectURL(file) })),
    );
    this.set([...this.images, ...added]);
    if (images.length < files.length) throw new Error("Only PNG, JPEG, WebP and GIF images can be attached.");
  }

  set(images) {
    this.images = images;
    this.list.replaceChildren(...images.map((image, index) => this.item(image, index)));
    this.list.hidden = !images.length;
    this.changed();
  }

  item(image, index) {
    const item = document.createElement("li");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove image ${index + 1}`);
    remove.addEventListener("click", () => this.set(this.images.filter((other) => other !== image)));
    item.append(thumbnail(image.thumb), remove);
    return item;
  }
}

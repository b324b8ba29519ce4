"""``make models ADAPTER=dir ADAPTER_NAME=name`` (``scripts/import_adapter.py``): a PEFT adapter made by PEFT
(``tests.lora_adapter``) goes into a BentoML store of its own (a temporary ``BENTOML_HOME``: the user's store is
never touched), a config naming it as ``{bentoml: name}`` finds its files, and the service declares it among the
models ``bentoml build`` packages (BentoML's own ``BentoServiceInfo.from_service``, what a build records)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest
import yaml
from bentoml.exceptions import NotFound

from settings import ROOT

CHAT_MODEL = "smollm2-135m-instruct"
NAME = "tuned-adapter"
# Run with the temporary store: the service as `bentoml build --arg config=...` imports it, then what the build
# records for its models, and what the adapter source and /v1/load_lora_adapter's tag lookup resolve to.
RESOLVE = """
import json, sys
from pathlib import Path
from bentoml._internal.bento.bento import BentoServiceInfo
from bentoml._internal.utils.args import set_arguments
set_arguments({"config": sys.argv[1]})
import service
from engines.lora_files import bentoml_model, check_adapter
found = bentoml_model(sys.argv[2])
check_adapter(found, Path(sys.argv[3]), 8)
print(json.dumps({
    "build_models": [str(info.tag) for info in BentoServiceInfo.from_service(service.BentoOAI).models],
    "files": sorted(path.name for path in found.iterdir()),
}))
"""


@pytest.fixture(scope="module")
def base() -> Path:
    return Path(bentoml.models.get(CHAT_MODEL).path)


@pytest.fixture(scope="module")
def peft_dir(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.lora_adapter import make_adapter

    return make_adapter(base, tmp_path_factory.mktemp("peft") / "my-adapter")


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def imported(home: Path, directory: Path, *name: str) -> str:
    done = run(home, "scripts/import_adapter.py", str(directory), *name)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.stress  # 30 s: PEFT makes the adapter; two processes import BentoML (and the service)
def test_an_imported_adapter_is_served_and_packaged_from_the_store(base: Path, peft_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    assert "saved as" in imported(home, peft_dir, "--name", NAME)
    assert "already in the store" in imported(home, peft_dir, "--name", NAME), "the same files: no new version"
    versions = list((home / "models" / NAME).iterdir())
    assert len([path for path in versions if path.is_dir()]) == 1
    config = {
        "models": [
            {
                "id": CHAT_MODEL,
                "source": {"path": str(base)},
                "engine": {"enable_lora": True, "max_lora_rank": 8},
                "adapters": [{"id": "tuned", "source": {"bentoml": NAME}}],
            }
        ],
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    done = run(home, "-c", RESOLVE, str(config_file), NAME, str(base))
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout.strip().splitlines()[-1])
    assert [tag.split(":")[0] for tag in resolved["build_models"]] == [NAME]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(resolved["files"])
    with pytest.raises(NotFound):  # the user's store is untouched
        bentoml.models.get(NAME)


def test_a_directory_that_is_no_peft_lora_adapter_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not-an-adapter").mkdir()
    (tmp_path / "not-an-adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    done = run(tmp_path / "bentoml", "scripts/import_adapter.py", str(tmp_path / "not-an-adapter"))
    assert done.returncode != 0 and "not a PEFT LoRA config" in done.stderr
    assert not (tmp_path / "bentoml" / "models").exists() or not any((tmp_path / "bentoml" / "models").iterdir())

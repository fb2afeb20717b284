"""Documentation that must not drift from the code."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from cli_reference import OUT, reference  # noqa: E402


def test_cli_reference_is_generated_from_the_current_commands():
    assert OUT.read_text() == reference(), "run: python tools/cli_reference.py"


def test_readme_fits_on_a_screen_and_starts_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    block = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert block is not None and text.index("```bash") < text.index("\n## ")
    cmds = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(cmds) == 2 and cmds[0].endswith("scnet-dask demo")
    assert cmds[1].endswith("python -m pytest -q")


def test_readme_and_docs_name_only_files_that_exist():
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        pattern = r"`((?:docs|benchmarks|examples|tools|scnet_dask)/[\w./-]+)`"
        for ref in re.findall(pattern, doc.read_text()):
            if "mymethod" not in ref and not (ROOT / ref.rstrip("/")).exists():
                missing.append(f"{doc.name}: {ref}")
    assert not missing, missing

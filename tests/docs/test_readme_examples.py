"""Every ``bash`` and ``python`` block of README.md runs, in order, against a live embedded server.

The service starts as ``make run`` starts it (``hra run``), on a fresh var directory and a free port, in a scratch
directory laid out like the repository's root (``var/`` is the service's; ``tests``, ``benchmarks`` and ``.venv``
link to the repository's), so the examples read ``var/api-key``, ``$PORT`` and the fixtures exactly as a reader at
the root does. The service gets small training budgets, greedy decoding and a gate that promotes every candidate, so that the
examples after a promotion (rollback, the speaker's head in service) run; the gate itself is tested in
tests/hra/test_gate.py.

Each bash block runs in ``bash -euo pipefail`` with the variables the blocks before it left (saved after each
block and sourced before the next, as one terminal session would keep them); each python block runs with the
environment those variables exported. A block that must not run has ``<!-- not executed: why -->`` on the line
above it; every other one runs. The test fails on a marker without a reason or above no block, on a block without
an entry in ``EXPECTED``, on a non-zero exit, on an API error in a block's output (unless that block expects one),
and when a block's output lacks what ``EXPECTED`` says it shows. Each block's script and output stay in the scratch
directory's ``.docs/`` (under pytest's temporary directory); ``-s`` prints each block's time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import HRA, REPO_ROOT, free_port, stop, wait_ready

README = REPO_ROOT / "README.md"
MARKER = re.compile(r"^\s*<!--\s*not executed:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[^\s`]*)\s*$")
RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "console": "bash", "python": "python", "py": "python"}
BLOCK_TIMEOUT_S = 300
EXAMPLE_TOOLS = ("bash", "curl", "jq", "sox")

# Small budgets, greedy decoding, and a gate that promotes every candidate (see the module's docstring).
SERVICE_ENV = {
    "HRA_DEFAULT_TRAIN_SECONDS": "6",
    "HRA_DEFAULT_MAX_EPOCHS": "2",
    "HRA_GATE_MIN_EVAL_WORDS": "0",
    "HRA_GATE_MIN_RELATIVE_IMPROVEMENT": "-1000",
    "HRA_GATE_CONFIDENCE": "0",
    "HRA_GATE_BOOTSTRAP_SAMPLES": "50",
    "HRA_BEAM_SIZE": "1",
    "OMP_NUM_THREADS": "1",
}

# A block is found by a piece of its code (exactly one block must contain it); its output (stdout and stderr) must
# match every pattern. ERRORS_EXPECTED: blocks that show an API error on purpose.
EXPECTED: dict[str, list[str]] = {
    "export HRA_URL=$URL HRA_API_KEY=$KEY": [],
    "mkdir -p recordings": [],
    "hra enroll recordings/ --speaker ana": [
        r"uploaded 16, already stored 0, failed 0; speaker ana has 10 train \+ 6 held-out",
        r"uploaded 0, already stored 16, failed 0",
        r": promoted \(head ",
        r"(?m)^v1\s+in_service\s+linear",
        r"version 1 of ana is out of service",
        r"version 1 of ana is in service",
        r"-->",  # the SRT cue
    ],
    "hra.resolve_speaker(\"nobody\")": [
        r"(?m)^promoted ",
        r"\(1, 'retired'\), \(2, 'in_service'\)",
        r"404 speaker_not_found",
    ],
    "export SPEAKER=$(curl": [r"event: end", r'"decision":\s*"promote"', r'"fingerprint', r'"text":'],
    "/v1/heads/$HEAD/retire": [r'"reason":\s*"v1 after all"', r'"reason":\s*"worse for me"'],
    "sox benchmarks/data/real_speech": [],
    "client.audio.transcriptions.create": [r"whisper-1", r"-->", r"transcript\.text\.delta", r"transcript\.text\.done"],
    "-X DELETE $URL/v1/speakers/$SPEAKER/utterances/$UTT": [r"withdrawn"],
    "curl -s $URL/healthz": [r"ok"],
    "hra keys create --tenant acme": [r"revoked key hra_", r'"code":\s*"unauthorized"'],
    "hra tenants show acme": [r'"source": "override"', r'"limit": 50'],
    "curl -s $URL/metrics": [r'hra_jobs\{state="promoted"\} [1-9]', r'hra_metrics_source_up\{source="database"\} 1'],
    "hra jobs reap": [r"interrupted speaker erasures finished: 0"],
    "python -m app.settings_doc --check": [r"matches app/settings.py"],
}
ERRORS_EXPECTED = {"hra keys create --tenant acme"}
API_ERROR = re.compile(r'\{"error":\s*\{')

# Variables a block's bash leaves for the next one: all but bash's own.
SAVE_STATE = r"""
__docs_save_state() {
  local __docs_name
  for __docs_name in $(compgen -v); do
    case "$__docs_name" in
      BASH*|FUNCNAME|PIPESTATUS|LINENO|RANDOM|SRANDOM|SECONDS|EPOCHREALTIME|EPOCHSECONDS|PPID|UID|EUID|GROUPS) ;;
      SHELLOPTS|DIRSTACK|OPTIND|OPTARG|OPTERR|SHLVL|PWD|OLDPWD|_|__docs_*|HOSTNAME|HOSTTYPE|MACHTYPE|OSTYPE) ;;
      IFS|PS1|PS2|PS4|COLUMNS|LINES|HISTCMD|COMP_WORDBREAKS) ;;
      *) declare -p "$__docs_name" 2>/dev/null | grep -v '^declare -[a-zA-Z]*r' || true ;;
    esac
  done > "$1"
}
"""


@dataclass(frozen=True)
class Block:
    index: int
    line: int  # of the opening fence, 1-based
    lang: str  # as written after the fence
    code: str
    skip_reason: str | None

    @property
    def runner(self) -> str | None:
        return RUNNABLE.get(self.lang)

    def title(self) -> str:
        first = next((line for line in self.code.splitlines() if line.strip()), "")
        return f"README.md:{self.line} ({self.lang}) {first[:80]}"


def parse_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks, each with the reason of a ``not executed`` marker on the line above it.

    Raises ``ValueError`` for a marker that is not directly above a fence, an empty reason, or an unclosed fence."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker:
            if not marker.group("reason"):
                raise ValueError(f"README.md:{i + 1}: a `not executed` marker needs a reason")
            if i + 1 >= len(lines) or not FENCE.match(lines[i + 1]) or not FENCE.match(lines[i + 1]).group("lang"):
                raise ValueError(f"README.md:{i + 1}: a `not executed` marker must be right above a code block")
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"README.md:{i + 1}: unclosed code block")
        above = MARKER.match(lines[i - 1]) if i > 0 else None
        blocks.append(
            Block(
                index=len(blocks),
                line=i + 1,
                lang=fence.group("lang"),
                code=textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n",
                skip_reason=above.group("reason") if above else None,
            )
        )
        i = end + 1
    return blocks


def find_block(blocks: list[Block], key: str) -> Block:
    found = [block for block in blocks if block.runner and block.skip_reason is None and key in block.code]
    assert len(found) == 1, f"EXPECTED key {key!r} is in {len(found)} executed blocks of README.md, not exactly one"
    return found[0]


# ---- without a server ---------------------------------------------------------------------------------------


def test_every_block_runs_or_says_why_not() -> None:
    blocks = parse_blocks(README.read_text(encoding="utf-8"))
    assert all(block.lang for block in blocks), "every code block names its language (```bash, ```python, ...)"
    runnable = [block for block in blocks if block.runner]
    executed = [block for block in runnable if block.skip_reason is None]
    marked = [block for block in blocks if block.skip_reason is not None]
    assert all(block.runner for block in marked), "only bash/python blocks carry a `not executed` marker"
    assert len(executed) >= 10 and len(marked) <= len(executed)
    assert {find_block(blocks, key).index for key in EXPECTED} == {block.index for block in executed}, (
        "every executed block has an entry in EXPECTED"
    )


def test_parse_blocks_reads_markers() -> None:
    text = (
        "x\n<!-- not executed: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
        "```python\nprint(1)\n```\n```json\n{}\n```\n"
    )
    blocks = parse_blocks(text)
    assert [(b.lang, b.skip_reason, b.code) for b in blocks] == [
        ("bash", "needs a GPU", "nvidia-smi\n"),
        ("python", None, "print(1)\n"),
        ("json", None, "{}\n"),
    ]
    for bad in ("<!-- not executed: -->\n```bash\nx\n```\n", "<!-- not executed: why -->\n\n```bash\nx\n```\n"):
        with pytest.raises(ValueError):
            parse_blocks(bad)


# ---- against `hra run` --------------------------------------------------------------------------------------


@dataclass
class DocsService:
    base_url: str
    workdir: Path
    env: dict[str, str]  # for the blocks

    def api(self) -> httpx.Client:
        key = (self.workdir / "var" / "api-key").read_text().strip()
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60.0)


@pytest.fixture(scope="module")
def docs_service(tmp_path_factory) -> Iterator[DocsService]:
    missing = [tool for tool in EXAMPLE_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the README's examples need {', '.join(missing)}: `make test` installs them (Debian packages)")
    workdir = tmp_path_factory.mktemp("readme-root")
    for name in ("tests", "benchmarks", ".venv"):
        (workdir / name).symlink_to(REPO_ROOT / name)
    var_dir = workdir / "var"
    var_dir.mkdir()
    (workdir / "home").mkdir()  # no ~/.config/hra/config.toml of the person running the tests
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HRA_") and k not in ("PORT", "VIRTUAL_ENV")}
    base = {**clean, "PORT": str(port), "HOME": str(workdir / "home"), "OMP_NUM_THREADS": "1"}
    service_env = {**base, **SERVICE_ENV, "HRA_VAR_DIR": str(var_dir)}
    log = var_dir / "hra-run.log"
    # As `make run` does, but from the scratch root: no HRA_BOOTSTRAP_API_KEY, so the key lands in var/api-key.
    proc = subprocess.Popen(
        [HRA, "run"], cwd=workdir, env=service_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", [proc])
        yield DocsService(f"http://127.0.0.1:{port}", workdir, base)
    finally:
        stop([proc])


def _run_block(block: Block, service: DocsService, state: Path) -> subprocess.CompletedProcess[str]:
    scripts = service.workdir / ".docs"
    scripts.mkdir(exist_ok=True)
    if block.runner == "bash":
        script = scripts / f"block-{block.index:02d}.sh"
        script.write_text(
            f"set -euo pipefail\n{SAVE_STATE}\n[ -f {state} ] && source {state}\n"
            f"# ---- README.md:{block.line}\n{block.code}# ----\n__docs_save_state {state}\n",
            encoding="utf-8",
        )
        command = ["bash", str(script)]
    else:
        script = scripts / f"block-{block.index:02d}.py"
        script.write_text(block.code, encoding="utf-8")
        command = ["bash", "-c", f'set -euo pipefail; [ -f {state} ] && source {state}; exec python "$0"', str(script)]
    return subprocess.run(
        command, cwd=service.workdir, env=service.env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S,
        check=False,
    )


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_readme_examples_run_against_a_live_server(docs_service: DocsService) -> None:
    blocks = parse_blocks(README.read_text(encoding="utf-8"))
    expected = {find_block(blocks, key).index: (key, patterns) for key, patterns in EXPECTED.items()}
    state = docs_service.workdir / ".docs-state.sh"
    executed: list[int] = []
    timings: list[str] = []  # shown with -s
    for block in blocks:
        if block.runner is None or block.skip_reason is not None:
            continue
        started = time.monotonic()
        result = _run_block(block, docs_service, state)
        timings.append(f"{time.monotonic() - started:6.1f} s  {block.title()}")
        print(timings[-1], flush=True)
        output = result.stdout + result.stderr
        (docs_service.workdir / ".docs" / f"block-{block.index:02d}.out").write_text(output, encoding="utf-8")
        logs = (docs_service.workdir / "var" / "hra-run.log").read_text(errors="replace")[-3000:]
        context = f"{block.title()}\n---- code\n{block.code}---- output\n{output[-6000:]}\n---- hra run log\n{logs}"
        assert result.returncode == 0, f"exit {result.returncode}: {context}"
        key, patterns = expected[block.index]
        if key not in ERRORS_EXPECTED:
            assert not API_ERROR.search(output), f"an API error in the output: {context}"
        for pattern in patterns:
            assert re.search(pattern, output), f"output lacks {pattern!r}: {context}"
        executed.append(block.index)

    marked = {block.index for block in blocks if block.skip_reason is not None}
    runnable = {block.index for block in blocks if block.runner}
    assert set(executed) == runnable - marked, "every runnable block ran, except the marked ones"

    # What the examples left on the server.
    with docs_service.api() as api:
        speakers = {s["external_id"]: s for s in api.get("/v1/speakers").json()["items"]}
        assert set(speakers) == {"ana"}, "bea was erased by the last API example"
        heads = api.get(f"/v1/speakers/{speakers['ana']['id']}/heads").json()["items"]
        assert [h["status"] for h in heads] == ["retired", "in_service"]
    assert (docs_service.workdir / "head.safetensors").stat().st_size > 0
    assert len(list((docs_service.workdir / "heads").glob("*.safetensors"))) == 2

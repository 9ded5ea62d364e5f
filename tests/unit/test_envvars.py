"""Every ``BLOCKTRAIN_*`` variable of the library is declared once, in ``core/envvars.py``.

The library names a variable only through its declaration (no string literal outside the
registry), ``docs/configuration.md`` shows each declaration's type, default and meaning, the
defaults it promises are the ones the code applies, and the variables of the scripts,
benchmarks and tests are documented apart from the library's.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from blocktrain.core import envvars
from blocktrain.core.jobenv import job_context
from blocktrain.data.cache.config import CacheConfig
from blocktrain.data.s3 import S3Config
from blocktrain.notify.config import NotifyConfig
from blocktrain.restart.config import RestartConfig
from blocktrain.track.tracker import TrackConfig

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "blocktrain"
REGISTRY = SRC / "core" / "envvars.py"
DOC = REPO / "docs" / "configuration.md"
NAME = re.compile(r"BLOCKTRAIN_[A-Z0-9_]*[A-Z0-9]")
SECTIONS = {"user": "Set by you", "blocktrain": "Set by blocktrain in a launched job's tasks"}
TOOLS = "Development tools and the test suite"


def _tables() -> dict[str, list[list[str]]]:
    """The body rows of the table under each ``## `` heading of the doc, as cells."""
    tables: dict[str, list[list[str]]] = {}
    rows: list[list[str]] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            rows = tables.setdefault(line.removeprefix("## ").strip(), [])
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if cells[0] != "variable":
                rows.append(cells)
    return tables


def _plain(cell: str) -> str:
    return cell.replace("`", "")


def _row(var: envvars.Var) -> str:
    return f"| `{var.name}` | {var.type} | {var.default} | {var.meaning} |"


def test_every_declaration_is_listed_once() -> None:
    declared = [value for value in vars(envvars).values() if isinstance(value, envvars.Var)]
    assert sorted(v.name for v in declared) == sorted(v.name for v in envvars.ALL)
    assert len({v.name for v in envvars.ALL}) == len(envvars.ALL)
    assert all(v.name.startswith(envvars.PREFIX) for v in envvars.ALL)
    assert all(v.meaning and v.type for v in envvars.ALL)


def test_the_doc_tables_show_the_declarations() -> None:
    tables = _tables()
    for set_by, heading in SECTIONS.items():
        declared = [v for v in envvars.ALL if v.set_by == set_by]
        shown = [tuple(_plain(cell) for cell in row) for row in tables[heading]]
        expected = [(v.name, v.type, v.default, v.meaning) for v in declared]
        rows = "\n".join(_row(v) for v in declared)
        assert shown == expected, f"the table under '## {heading}' should read:\n{rows}"


def test_every_name_in_the_doc_is_declared_or_a_tool() -> None:
    declared = {v.name for v in envvars.ALL}
    tools = {_plain(row[0]) for row in _tables()[TOOLS]}
    assert not tools & declared, "the library's variables belong in the first two tables"
    unknown = set(NAME.findall(DOC.read_text())) - declared - tools
    assert not unknown, f"declare these in core/envvars.py or list them as tools: {unknown}"


def test_the_tools_variables_are_the_documented_ones() -> None:
    """A variable of a script or benchmark is documented; a documented one is still used."""
    declared = {v.name for v in envvars.ALL}
    tools = {_plain(row[0]) for row in _tables()[TOOLS]}
    files = [p for p in (REPO / "scripts").iterdir() if p.is_file()]
    files += [*(REPO / "benchmarks").glob("*.py"), REPO / "Makefile"]
    used = {name for path in files for name in NAME.findall(path.read_text())}
    assert used - declared <= tools, f"document in {DOC.name}: {used - declared - tools}"
    tests = {name for p in (REPO / "tests").rglob("*.py") for name in NAME.findall(p.read_text())}
    assert tools <= used | tests, f"no longer used: {tools - used - tests}"


def _docstrings(tree: ast.Module) -> set[int]:
    """Ids of the bare string statements: module, class, function and attribute docstrings."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def test_the_library_names_variables_only_through_the_registry() -> None:
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        if path == REGISTRY:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = _docstrings(tree)
        found += [
            f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and envvars.PREFIX in node.value
            and id(node) not in docstrings
        ]
    assert not found, "use the declarations of blocktrain.core.envvars:\n" + "\n".join(found)


def test_the_documented_defaults_are_the_applied_ones(tmp_path: Path) -> None:
    tracking = TrackConfig.from_environ({}, tmp_path)
    assert tracking.upload_interval_s == float(envvars.LOG_UPLOAD_SECONDS.default)
    assert tracking.start_timeout_s == float(envvars.MLFLOW_START_SECONDS.default)
    assert tracking.flush_timeout_s == float(envvars.MLFLOW_FLUSH_SECONDS.default)
    assert tracking.system_metrics_interval_s == float(envvars.SYSTEM_METRICS_INTERVAL_S.default)
    assert tracking.log_dir == tmp_path.resolve() / ".blocktrain" / "logs"
    assert NotifyConfig.from_environ({}).timeout_s == float(envvars.SLACK_TIMEOUT_SECONDS.default)
    s3 = S3Config.from_environ({})
    assert s3.retry.attempts == int(envvars.S3_ATTEMPTS.default)
    assert s3.concurrency == int(envvars.S3_CONCURRENCY.default)
    cache = CacheConfig.from_environ({"DATA_PATH": str(tmp_path)})
    assert (cache.verify, cache.dev) == (envvars.DATA_VERIFY.default, False)
    folders = {envvars.RUN_DIR.name: str(tmp_path), envvars.REQUEUE_DIR.name: str(tmp_path)}
    restart = RestartConfig.from_environ(folders)
    assert restart is not None
    assert restart.signal == envvars.RESTART_SIGNAL.default
    assert restart.lead_s == float(envvars.RESTART_LEAD_S.default)
    assert dict(restart.budgets) == json.loads(envvars.RESTART_BUDGETS.default)
    assert restart.time_limit_s is None
    assert job_context({}).attempt == int(envvars.ATTEMPT_BASE.default) + 1

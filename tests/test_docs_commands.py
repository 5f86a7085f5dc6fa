"""The docs tell the truth: every command, option, method, profile, setting, import, call and path
in README.md, docs/*.md, the notebooks' text and the commands' --help examples exists in the code.

The checker is ``tests/_docs_check.py`` (its docstring lists the conventions it understands);
here it runs on the real docs (< 1 s after the imports) and on broken snippets it must catch.
"""

from __future__ import annotations

import json

import pytest

from _docs_check import DOC_FILES, ROOT, SKIPS, Checker


@pytest.fixture(scope="module")
def checked_docs():
    checker = Checker()
    for path in DOC_FILES:
        checker.check_markdown(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):  # their prose (nbmake runs their code)
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        prose = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        checker.check_markdown(path.relative_to(ROOT).as_posix(), prose)
    checker.check_cli_help()
    return checker


def test_every_documented_command_and_import_exists(checked_docs):
    assert checked_docs.checked > 150, checked_docs.checked  # the parser found the docs' commands
    assert not checked_docs.problems, "\n".join(checked_docs.problems)


def test_every_skip_is_still_needed(checked_docs):
    stale = {k: why for k, why in SKIPS.items() if k not in checked_docs.used_skips}
    assert not stale, f"SKIPS entries that match nothing any more: {stale}"


BROKEN = {
    "typo_option": ("```bash\nmedcf train vae --data d --out o --step 5\n```", "has no option --step"),
    "no_command": ("```bash\nmedcf trian classifier --data d\n```", "no such command"),
    "alternative": ("| `medcf train vae\\|vaee --data DIR` | x |", "`medcf train vaee`: no such command"),
    "method": ("```\nmedcf explain --method latent-shfit --classifier RUN\n```", "not a registered method"),
    "methods": ("`medcf benchmark --methods gvr,baseline-foo`", "baseline-foo"),
    "profile": ("```bash\nmedcf benchmark --profile huge --out x\n```", "not a shipped profile"),
    "set_key": ("```bash\nmedcf evaluate --method gvr --set no_such=1 \\\n  --data d\n```", "'no_such'"),
    "ignored_flag": ("```bash\nmedcf explain --method cyclegan --iterative --images x\n```", "ignores --iterative"),
    "set_value": ("`medcf evaluate --method icam --set compose=blend`", "expected one of"),
    "flag_value": ("```bash\nmedcf explain --method gvr --compose masked\n```", "got 'masked'"),
    "class_name": ("```bash\nmedcf train vagan --data data/opacity64 --source opacity --target normal\n```",
                   "not a class of the opacity data"),
    "loop": ("```bash\nfor r in oracle oracel; do\n  medcf train $r --data d; done\n```", "medcf train oracel"),
    "variable": ("```bash\nc=\"--classifer C\"\nmedcf explain $c\n```", "has no option --classifer"),
    "demo_alias": ("```bash\npython -m medcf.demo --out x --quik\n```", "has no option --quik"),
    "import": ("```python\nfrom medcf.eval import validity, validty\n```", "has no validty"),
    "module": ("```python\nimport torch\nfrom medcf.evals import validity\n```", "medcf.evals"),
    "python_c": ("```bash\npython -c \"from medcf.data import open_datasets\"\n```", "open_datasets"),
    "keyword": ("```python\nfrom medcf.counterfactual import LatentShift\nLatentShift(autoencoder=1, clasifier=2)\n```",
                "unexpected keyword argument 'clasifier'"),
    "attribute": ("```python\nfrom medcf.counterfactual.latent_shift import LatentShiftConfig as C\n"
                  "C.publish()\n```", "`C.publish`: no such attribute"),
    "dotted": ("Prose naming `medcf.eval.validty` in a code span.", "medcf.eval has no validty"),
    "path": ("See `docs/data.md` for the data.", "`docs/data.md`: no such file"),
    "script": ("```bash\npython benchmarks/bench_synthetic.py --n 10 --nn 3\n```", "has no option --nn"),
    "no_script": ("`python benchmarks/nope.py --n 3`", "`benchmarks/nope.py`: no such script"),
    "make": ("Run `make demos` first.", "`make demos`: no such target"),
    "syntax": ("```python\nx = (1,\n```", "does not parse"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_guard_catches_a_broken_snippet(case):
    text, needle = BROKEN[case]
    checker = Checker(skips={})
    checker.check_markdown("broken.md", text)
    assert any(needle in p for p in checker.problems), checker.problems
    assert all(p.startswith("broken.md:") for p in checker.problems), checker.problems


def test_runnable_forms_pass():
    text = ("```bash\nD=runs/demo\ncommon=\"--classifier $D/classifier --limit 64\"\n"
            "medcf evaluate $common --out eval/x --set iterative=false   # a comment --nope\n"
            "OMP_NUM_THREADS=1 /usr/bin/time -v medcf benchmark --profile quick --out o \\\n"
            "    --methods latent-shift,baseline-ig | tee log\n```\n"
            "Table: `medcf train classifier\\|oracle --data DIR [--steps N] ...` and `medcf explain/evaluate`.\n\n"
            "`benchmarks/gone.py` was removed (`git show abc123:benchmarks/gone.py`); "
            "`python benchmarks/bench_synthetic.py --n 10` runs.")
    checker = Checker(skips={})
    checker.check_markdown("ok.md", text)
    assert checker.problems == [] and checker.checked == 8


def test_the_commands_help_examples_are_checked(monkeypatch):
    checker = Checker(skips={})
    checker.check_cli_help()
    assert checker.problems == [] and checker.checked >= 25, (checker.checked, checker.problems)
    vae = checker.root.commands["train"].commands["vae"]
    monkeypatch.setattr(vae, "help", "Train a VAE.\n\nExample: medcf train vae --data d\n--stepz 3")
    checker.check_cli_help()
    assert checker.problems == ["`medcf train vae --help`: `medcf train vae` has no option --stepz"]

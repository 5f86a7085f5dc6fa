"""The docs' drift guard (tests/test_docs_commands.py runs it): parse README.md and docs/*.md
and check what they tell a user to run against the code, without running it.

Every ``medcf ...`` command in a fenced shell block (``bash`` or unlabelled) or an inline code
span is resolved against the CLI app itself (the click objects typer builds, no subprocess):
the subcommand must exist and each ``--option`` must be one of that command's options.
``--method``/``--methods``/``--profile``/``--task``/``--set KEY=VALUE`` values are checked
against the method registry, the shipped profiles and the task lists. Every
``from medcf.X import Y`` in a ``python`` block (or a ``python -c`` command) must name
something that exists, and calls of those names must bind (keywords, argument count).
Also: every ``medcf.a.b`` named in a code span exists; every repository path a page names
exists (a removed file needs the page's ``git show SHA:path``); ``python benchmarks/x.py
--opt`` uses options the script declares; and every command's ``--help`` examples pass the
same command checks.

Conventions the checker understands, so docs can stay readable:

- ``a|b`` (no spaces; ``\\|`` in a table cell) and ``explain/evaluate`` in the command
  position are alternatives: every combination is checked; `` | `` with spaces is a pipe;
- ``[--flag]`` is an optional flag (checked like ``--flag``); ``...`` elides the rest;
- upper-case values (``RUN``, ``DIR``, ``NAME``, ``FIELD=VALUE``) are placeholders;
- a shell block's ``NAME=value`` assignments and ``for v in a b; do ...; done`` loops are
  expanded, so ``medcf train $r`` is checked for every ``r``;
- ``python -m medcf.demo ARGS`` is checked as ``medcf demo ARGS`` (its documented alias).

What is deliberately not checked is listed in ``SKIPS`` with the reason; a skip that no
longer matches anything fails the test too.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import itertools
import re
import shlex
import textwrap
from pathlib import Path

import typer

from medcf.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPO_PATH = re.compile(r"(?:docs|tests|src|notebooks|benchmarks|\.ci)/[\w./-]*\w")  # a path in the repository
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
ALT = "\u2502"  # stands for an alternatives bar `a|b` while the shell line is tokenized
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(=[A-Z][A-Z0-9_]*)?$")

# explain/evaluate flags that set a method option: flag -> (keyword, how the CLI types the text)
METHOD_FLAGS = {
    "--take-at": ("take_at", float), "--step-size": ("step_size", float), "--max-steps": ("max_steps", int),
    "--compose": ("compose", str), "--max-change": ("max_change", "max_change"),
    "--iterative": ("iterative", lambda v: True), "--single-gradient": ("iterative", lambda v: False),
    "--encoder": ("encoder", str), "--probe-dir": ("probe_dir", str), "--fit-samples": ("fit_samples", int),
    "--project-steps": ("project_steps", int), "--away-from": ("direction", lambda v: "away"),
}

# flags naming the two classes of a trainer: checked against the task the --data path names
# (`data/opacity64` -> clear/opacity); a path that names no task is not checked
CLASS_FLAGS = {"medcf train vagan": ("--source", "--target"), "medcf train cyclegan": ("--domain-a", "--domain-b"),
               "medcf train icam": ("--domain-a", "--domain-b")}

# (doc, offending value): why it is not a runnable value. Checked to still occur.
SKIPS = {
    ("docs/adding-a-method.md", "src/medcf/counterfactual/mymethod.py"): "the module of the page's example method",
    ("docs/adding-a-method.md", "tests/test_mymethod.py"): "the test file of the page's example method",
    ("docs/adding-a-method.md", "my-method"): "the page's example name for a method you add",
    ("README.md", "a"): "`--methods a,b` in the command table is the generic form of a list",
    ("README.md", "b"): "`--methods a,b` in the command table is the generic form of a list",
}


# ---------------------------------------------------------------- markdown
def split_markdown(text: str) -> tuple[list[tuple[str, int, str]], str]:
    """(fenced blocks as (lang, first body line, body), prose with the blocks blanked)."""
    blocks, prose, lines = [], [], text.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(```+)\s*([\w+-]*)", lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        blocks.append((lang, start + 1, "\n".join(lines[start:j])))
        prose.extend([""] * (j + 1 - i))
        i = j + 1
    return blocks, "\n".join(prose)


def code_spans(prose: str) -> list[tuple[int, str]]:
    """Inline code spans as (line, text); a span never crosses a blank line."""
    spans, line = [], 1
    for para in re.split(r"(\n\s*\n)", prose):
        for m in re.finditer(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", para, flags=re.S):
            spans.append((line + para.count("\n", 0, m.start()), " ".join(m.group(2).split())))
        line += para.count("\n")
    return spans


# ---------------------------------------------------------------- shell
def logical_lines(body: str, first: int) -> list[tuple[int, str]]:
    """Shell lines as (line number, text): backslash-newline joined, quoted newlines kept."""
    out, cur, start, quote, i = [], [], first, None, 0
    line = first
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] == "\n":
            i, line = i + 2, line + 1
            cur.append(" ")
            continue
        if c == "\\" and quote != "'" and i + 1 < len(body):
            cur.append(body[i:i + 2])
            i += 2
            continue
        if quote is None and c == "#" and (not cur or cur[-1][-1:].isspace()):
            while i < len(body) and body[i] != "\n":
                i += 1
            continue
        if c in "'\"" and (quote is None or quote == c):
            quote = None if quote == c else c
        if c == "\n":
            line += 1
            if quote is None:
                out.append((start, "".join(cur)))
                cur, start = [], line
                i += 1
                continue
        cur.append(c)
        i += 1
    out.append((start, "".join(cur)))
    return [(n, t) for n, t in out if t.strip()]


def simple_commands(text: str) -> list[list[str]]:
    """Tokens of each simple command on one shell line (split at ; && || | & ( ))."""
    text = re.sub(r"(?<=[^\s|])\|(?=[^\s|])", ALT, text.replace("\\|", "|"))
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
    lex.whitespace_split, lex.commenters = True, ""
    commands, cur = [], []
    for tok in lex:
        if tok and set(tok) <= set(";&|()"):
            commands.append(cur)
            cur = []
        else:
            cur.append(tok)
    return [c for c in commands + [cur] if c]


def expand_vars(tok: str, env: dict[str, str]) -> list[str]:
    """``$NAME``/``${NAME}`` substituted; a token that is only a variable splits into words."""
    whole = re.fullmatch(r"\$\{?(\w+)\}?", tok)
    if whole and whole.group(1) in env:
        return env[whole.group(1)].split()
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), tok)]


def run_shell(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Interpret assignments and ``for`` loops; (line, tokens) for every simple command run."""
    env: dict[str, str] = {}
    flat = [(n, cmd) for n, text in lines for cmd in simple_commands(text)]
    out: list[tuple[int, list[str]]] = []

    def run(seq, env):
        k = 0
        while k < len(seq):
            n, cmd = seq[k]
            if cmd[0] == "for" and len(cmd) >= 3 and cmd[2] == "in":
                depth, j = 1, k + 1
                while j < len(seq) and depth:
                    depth += (seq[j][1][0] == "for") - (seq[j][1][0] == "done")
                    j += 1
                body = [(m, c[1:] if c[0] == "do" else c) for m, c in seq[k + 1:j - 1]]
                body = [(m, c) for m, c in body if c]
                for value in [w for t in cmd[3:] for w in expand_vars(t, env)]:
                    run(body, {**env, cmd[1]: value})
                k = j
                continue
            if all(re.fullmatch(r"\w+=.*", t, flags=re.S) for t in cmd):
                for t in cmd:
                    name, _, value = t.partition("=")
                    env[name] = " ".join(expand_vars(value, env))
            else:
                out.append((n, [w for t in cmd for w in expand_vars(t, env)]))
            k += 1

    run(flat, env)
    return out


def medcf_call(tokens: list[str]) -> tuple[str, list[str]] | None:
    """("cli", argv) for a medcf command, ("python", [code]) for ``python -c``, ("script", [path, *args])
    for one of the repository's scripts (``python benchmarks/x.py ...``), ("make", targets), else None."""
    toks = list(tokens)
    while toks and (re.fullmatch(r"\w+=.*", toks[0], flags=re.S) or toks[0] in ("time", "env", "nice")):
        toks.pop(0)
    if toks and toks[0].endswith("/time"):
        toks.pop(0)
        while toks and toks[0].startswith("-"):
            toks.pop(0)
    if not toks:
        return None
    prog = toks[0].rsplit("/", 1)[-1]
    if prog == "medcf":
        return "cli", toks[1:]
    if prog == "make":
        return "make", [t for t in toks[1:] if not t.startswith("-") and "=" not in t]
    if prog.startswith("python") and len(toks) > 1 and REPO_PATH.fullmatch(toks[1]) and toks[1].endswith(".py"):
        return "script", toks[1:]
    if REPO_PATH.fullmatch(toks[0]) and toks[0].endswith(".py"):
        return "script", toks
    if prog.startswith("python") or prog in ("accelerate", "torchrun"):
        for k, t in enumerate(toks[1:-1], 1):
            if t == "-c" and prog.startswith("python"):
                return "python", [toks[k + 1]]
            if t == "-m" and toks[k + 1] == "medcf":
                return "cli", toks[k + 2:]
            if t == "-m" and toks[k + 1] == "medcf.demo":  # documented alias of `medcf demo`
                return "cli", ["demo", *toks[k + 2:]]
    return None


# ---------------------------------------------------------------- checking
def _alternatives(argv: list[str]) -> list[list[str]]:
    """Every combination of ``a|b`` alternatives; ``key=a|b`` means ``key=a`` or ``key=b``."""
    def split(tok):
        first, *rest = tok.split(ALT)
        key = first.partition("=")[0] + "=" if "=" in first else ""
        return [first, *[r if "=" in r else key + r for r in rest]]
    return [list(c) for c in itertools.product(*[split(t) for t in argv])]


def _placeholder(value: str) -> bool:
    return value in ("...", "…") or "$" in value or bool(PLACEHOLDER.match(value))


class Checker:
    """Resolves documented commands against the CLI and the registries; collects problems."""

    def __init__(self, skips: dict[tuple[str, str], str] | None = None):
        from medcf.benchmark import BASELINES, TASKS, builtin_profiles
        from medcf.benchmark.tasks import synthetic_tasks
        from medcf.counterfactual.registry import METHODS
        from medcf.data.synthetic import CLASS_NAMES

        self.root = typer.main.get_command(app)
        self.methods, self.baselines = METHODS, set(BASELINES)
        self.profiles, self.tasks, self.synth_tasks = set(builtin_profiles()), set(TASKS), set(synthetic_tasks())
        self.class_names = CLASS_NAMES
        self.skips = dict(SKIPS if skips is None else skips)
        self.used_skips: set[tuple[str, str]] = set()
        self.problems: list[str] = []
        self.checked = 0
        self.page = ""  # the page being checked

    def _bad(self, doc: str, where: str, value: str, why: str) -> None:
        if (doc, value) in self.skips:
            self.used_skips.add((doc, value))
            return
        self.problems.append(f"{where}: {why}")

    # --- commands
    def check_argv(self, doc: str, where: str, argv: list[str]) -> None:
        for alt in _alternatives([t.strip("[]") for t in argv if t.strip("[]")]):
            self._check_one(doc, where, alt)

    def _check_one(self, doc: str, where: str, argv: list[str]) -> None:
        cmd, path, k = self.root, ["medcf"], 0
        while hasattr(cmd, "commands"):  # a group (typer may vendor its own click)
            while k < len(argv) and argv[k] in ("--debug", "--verbose", "-v") and cmd is self.root:
                k += 1
            if k == len(argv) or _placeholder(argv[k]):
                return  # `medcf train ...`: a reference to the group, not a command
            name = argv[k]
            if name not in cmd.commands and "/" in name and not name.startswith("-"):
                for part in name.split("/"):  # `medcf explain/evaluate`
                    self._check_one(doc, where, argv[:k] + [part] + argv[k + 1:])
                return
            if name not in cmd.commands:
                self._bad(doc, where, name, f"`{' '.join(path)} {name}`: no such command "
                          f"(one of {', '.join(sorted(cmd.commands))})")
                return
            cmd, k = cmd.commands[name], k + 1
            path.append(name)
        self._check_options(doc, where, cmd, " ".join(path), argv[k:])

    def _check_options(self, doc, where, cmd, path, args) -> None:
        self.checked += 1
        by_flag = {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        given: dict[str, list[str]] = {}
        k = 0
        while k < len(args):
            tok, k = args[k], k + 1
            if not tok.startswith("-") or tok == "-" or re.fullmatch(r"-[\d.]+(e-?\d+)?", tok):
                continue  # a positional (paths, placeholders) or a negative number
            flag, eq, value = tok.partition("=")
            param = by_flag.get(flag)
            if param is None:
                self._bad(doc, where, flag, f"`{path}` has no option {flag}")
                continue
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                given.setdefault(flag, []).append("true")
                continue
            if not eq:
                if k == len(args) or args[k] == "...":
                    continue
                value, k = args[k], k + 1
            given.setdefault(flag, []).append(value)
            choices = getattr(getattr(param, "type", None), "choices", None)
            if choices and not _placeholder(value) and value not in choices:
                self._bad(doc, where, value, f"`{path} {flag} {value}`: not one of {list(choices)}")
        self._check_values(doc, where, cmd, path, given)

    def _check_values(self, doc, where, cmd, path, given) -> None:
        def each(flag):
            return [v for v in given.get(flag, []) if not _placeholder(v)]

        def known(flag, value, names, what):
            if value not in names:
                self._bad(doc, where, value, f"`{path} {flag} {value}`: not a {what} "
                          f"(known: {', '.join(sorted(names))})")

        method = None
        if path in ("medcf explain", "medcf evaluate"):
            default = next(p.default for p in cmd.params if p.name == "method")
            method = (given.get("--method") or [default])[-1]
            for v in each("--method"):
                known("--method", v, self.methods, "registered method")
        for v in each("--profile"):
            known("--profile", v, self.profiles, "shipped profile")
        for v in each("--methods"):
            for m in v.split(","):
                if not _placeholder(m):
                    known("--methods", m, set(self.methods) | self.baselines, "method or baseline")
        for v in each("--task"):
            tasks = self.tasks if path == "medcf benchmark" else self.synth_tasks
            if path in ("medcf benchmark", "medcf data synth"):
                known("--task", v, tasks, "task")
        task = next((t for t in self.synth_tasks for d in given.get("--data", []) if t in d), None)
        for flag in CLASS_FLAGS.get(path, ()) if task else ():
            for v in each(flag):
                known(flag, v, set(self.class_names[task]), f"class of the {task} data")
        if method in self.methods and not _placeholder(method):
            self._check_method_settings(doc, where, f"{path} --method {method}", method, given)

    def _check_method_settings(self, doc, where, what, method, given) -> None:
        """The explain/evaluate flags and ``--set``s through the CLI's own typing and the method's
        config: a setting the method would ignore (with a warning) or reject is a problem."""
        from medcf.cli.explain import _parse_max_change, method_options
        from medcf.counterfactual.checkpoints import config_from_options
        from medcf.errors import MedcfError

        spec, flags = self.methods[method], {}
        for flag, (key, kind) in METHOD_FLAGS.items():
            for v in given.get(flag, []):
                if not _placeholder(v):
                    flags[key] = _parse_max_change(v) if kind == "max_change" else kind(v)
        sets = [v for v in given.get("--set", []) if not any(map(_placeholder, v.split("=", 1)))]
        try:
            opts, named = method_options(method, flags, sets)
            ignored = sorted(named[k] for k in opts if k not in spec.accepts())
            if ignored:
                self._bad(doc, where, ignored[0], f"`{what}`: the method ignores {', '.join(ignored)}")
            if spec.config_class is not None:
                fields = {f.name for f in dataclasses.fields(spec.config_class)}
                config_from_options(spec.config_class, method, {k: v for k, v in opts.items() if k in fields})
        except MedcfError as e:
            self._bad(doc, where, str(e), f"`{what}`: {e}")

    # --- python
    def check_python(self, doc: str, where: str, code: str) -> None:
        code = textwrap.dedent(code)
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            try:  # a fragment of a table (`"name": Spec(...),`): parse it as a dict's body
                tree = ast.parse("{\n" + code + "\n}")
            except SyntaxError:
                self._bad(doc, where, "<python>", f"python does not parse: {e.msg} (line {e.lineno})")
                return
        names: dict[str, object] = {}  # what the snippet imported from medcf, by the name it uses
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "medcf":
                        self._import(doc, where, a.name)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "medcf":
                self.checked += 1
                module = self._import(doc, where, node.module)
                for a in node.names:
                    if module is None or a.name == "*":
                        continue
                    if hasattr(module, a.name):
                        names[a.asname or a.name] = getattr(module, a.name)
                    elif importlib.util.find_spec(f"{node.module}.{a.name}") is None:
                        self._bad(doc, where, a.name, f"`from {node.module} import {a.name}`: "
                                  f"{node.module} has no {a.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                self._check_call(doc, where, node, names)

    def _check_call(self, doc, where, node, names) -> None:
        """A call of something imported from medcf: attributes exist, the arguments bind."""
        chain, f = [], node.func
        while isinstance(f, ast.Attribute):
            chain.insert(0, f.attr)
            f = f.value
        if not isinstance(f, ast.Name) or f.id not in names:
            return
        obj, text = names[f.id], f.id
        for attr in chain:
            if not hasattr(obj, attr):
                self._bad(doc, where, f"{text}.{attr}", f"`{text}.{attr}`: no such attribute")
                return
            obj, text = getattr(obj, attr), f"{text}.{attr}"
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            return
        n_args = 0 if any(isinstance(a, ast.Starred) for a in node.args) else len(node.args)
        try:
            sig.bind_partial(*[None] * n_args, **{k.arg: None for k in node.keywords if k.arg})
        except TypeError as e:
            self._bad(doc, where, text, f"`{text}(...)`: {e}")

    def check_dotted(self, doc: str, where: str, name: str) -> None:
        """``medcf.a.b.C`` named in prose: the longest importable module, then attributes."""
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:k]))
            except ImportError:
                continue
            for attr in parts[k:]:
                if not hasattr(obj, attr):
                    self._bad(doc, where, name, f"`{name}`: {'.'.join(parts[:k])} has no {attr}")
                    return
                obj = getattr(obj, attr)
            return

    def _import(self, doc, where, name):
        try:
            return importlib.import_module(name)
        except ImportError as e:
            self._bad(doc, where, name, f"`import {name}` fails: {e}")
            return None

    # --- documents
    def check_markdown(self, doc: str, text: str) -> None:
        self.page = text
        self.check_paths(doc, text)
        blocks, prose = split_markdown(text)
        for lang, first, body in blocks:
            if lang == "python":
                self.check_python(doc, f"{doc}:{first}", body)
            elif lang in SHELL_LANGS:
                self._check_shell(doc, logical_lines(body, first), fenced=lang != "")
        for line, span in code_spans(prose):
            if re.match(r"(from|import) medcf\b", span):
                self.check_python(doc, f"{doc}:{line}", span)
            elif re.match(r"(\w+=\S+ )*(\S*/)?(medcf|python -m medcf(\.demo)?|(\S*python )?benchmarks/\S+\.py|make) ",
                          span + " "):
                self._check_shell(doc, [(line, span)], fenced=True)
            else:  # `medcf.eval.validity`, `medcf.train.cyclegan.prepare_cyclegan`: they exist
                for m in re.finditer(r"(?<![\w./])medcf(?:\.\w+)+", span):
                    self.check_dotted(doc, f"{doc}:{line}", m.group(0))

    def check_script(self, doc: str, where: str, path: str, args: list[str]) -> None:
        """``python SCRIPT --opt ...``: the script exists and declares each ``--opt`` (add_argument)."""
        self.checked += 1
        file = ROOT / path
        if not file.is_file():
            if not self._removed(path):
                self._bad(doc, where, path, f"`{path}`: no such script")
            return
        declared = {"--help"}
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                for a in node.args:
                    if isinstance(a, ast.Constant) and str(a.value).startswith("--"):
                        declared |= {a.value, f"--no-{a.value[2:]}"}  # BooleanOptionalAction's --no-X too
        for tok in args:
            flag = tok.partition("=")[0]
            if flag.startswith("--") and len(declared) > 1 and flag not in declared:
                self._bad(doc, where, flag, f"`{path}` has no option {flag}")

    def _removed(self, path: str) -> bool:
        """The page says where a removed file is: `git show SHA:path`."""
        return bool(re.search(rf"git show \w+:{re.escape(path)}\b", self.page))

    def check_paths(self, doc: str, text: str) -> None:
        """Every repository path the page names exists (a removed one needs its `git show SHA:path`)."""
        for n, line in enumerate(text.split("\n"), 1):
            for m in re.finditer(r"(?<![\w/.:-])" + REPO_PATH.pattern, line):
                path = m.group(0)
                if not (ROOT / path).exists() and not self._removed(path):
                    self._bad(doc, f"{doc}:{n}", path, f"`{path}`: no such file in the repository")

    def check_cli_help(self) -> None:
        """Every command's ``--help`` text: its ``medcf ...`` examples (to the paragraph's end)."""
        self.page = ""  # no page: nothing counts as documented-removed

        def walk(cmd, path):
            for name, sub in getattr(cmd, "commands", {}).items():
                walk(sub, [*path, name])
            for para in re.split(r"\n\s*\n", getattr(cmd, "help", None) or ""):
                m = re.search(r"(?:^|(?<=:))\s*medcf ", para, flags=re.M)  # a line's start or `Label: medcf ...`
                if m and not hasattr(cmd, "commands"):
                    where = f"`{' '.join(path)} --help`"
                    self._check_shell(where, [(0, " ".join(para[m.start():].split()))], fenced=True)

        walk(self.root, ["medcf"])

    def _check_shell(self, doc: str, lines, fenced: bool) -> None:
        try:
            commands = run_shell(lines)
        except ValueError as e:  # unbalanced quotes: an unlabelled block of output, not shell
            if fenced or any(medcf_call(t.split()) for _, t in lines):
                self.problems.append(f"{doc}:{lines[0][0]}: shell block does not tokenize: {e}")
            return
        for line, tokens in commands:
            call = medcf_call(tokens)
            if call is None:
                continue
            kind, argv = call
            if kind == "python":
                self.check_python(doc, f"{doc}:{line}" if line else doc, argv[0])
            elif kind == "make":
                targets = set(re.findall(r"^([\w.-]+)\s*:", (ROOT / "Makefile").read_text(), flags=re.M))
                for target in argv:
                    if target not in targets:
                        self._bad(doc, f"{doc}:{line}" if line else doc, target,
                                  f"`make {target}`: no such target in the Makefile")
            elif kind == "script":
                self.check_script(doc, f"{doc}:{line}" if line else doc, argv[0], argv[1:])
            else:
                self.check_argv(doc, f"{doc}:{line}" if line else doc, argv)

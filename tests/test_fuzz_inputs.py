"""Property-based fuzzing of the files users hand to mcts_po: problem files and tree files.

Whatever the bytes, a reader either accepts the file or raises `InputError` / `UserError`
naming the file (and the line, for a bad line); the CLI turns that into exit status 2 and
one line on stderr. A traceback from deep inside (KeyError, TypeError, AttributeError...)
fails the property. Files are built from valid records (written here, never copied from
the shared data) with hypothesis mutations: dropped fields, values of the wrong JSON type,
non-object lines, truncated lines, invalid UTF-8, blank lines.

    .venv/bin/pytest -q tests/test_fuzz_inputs.py
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcts_po.io_utils import InputError, UserError

# MCTS_PO_FUZZ_EXAMPLES=500 for a longer hunt (the defaults keep the fast suite fast).
EXAMPLES = int(os.environ.get("MCTS_PO_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW_READER = settings(max_examples=max(EXAMPLES // 3, 10), deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                  st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)


# --------------------------------------------------------------------------- file building

@st.composite
def mutated_record(draw, valid: dict[str, Any]) -> dict[str, Any]:
    """`valid` with a few fields dropped, retyped or added."""
    record = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "retype", "add"]))
        keys = sorted(record)
        if action == "drop" and keys:
            record.pop(draw(st.sampled_from(keys)))
        elif action == "retype" and keys:
            record[draw(st.sampled_from(keys))] = draw(json_values)
        else:
            record[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return record


ALL_LINE_KINDS = ("valid", "valid", "mutated", "non_object", "truncated", "bad_utf8", "blank", "junk")


@st.composite
def jsonl_lines(draw, valid_records: st.SearchStrategy, mutate, odd=None) -> list[bytes]:
    """Lines of a JSONL file: valid records, mutated records, non-objects and broken text. With
    `odd`, half the files hold only valid or `odd`-ly changed (well-typed but strange) records,
    so that readers accept them and the code behind the readers is exercised too."""
    kinds = ALL_LINE_KINDS
    if odd is not None and draw(st.booleans()):
        kinds = ("valid", "odd", "odd")
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(kinds))
        record = draw(valid_records)
        if kind == "valid":
            lines.append(json.dumps(record).encode())
        elif kind == "odd":
            lines.append(json.dumps(draw(odd(record))).encode())
        elif kind == "mutated":
            lines.append(json.dumps(draw(mutate(record))).encode())
        elif kind == "non_object":
            lines.append(json.dumps(draw(st.one_of(json_scalars, st.lists(json_scalars, max_size=3)))).encode())
        elif kind == "truncated":
            text = json.dumps(record).encode()
            lines.append(text[: draw(st.integers(1, len(text) - 1))])
        elif kind == "bad_utf8":
            lines.append(json.dumps(record).encode()[:5] + b"\xff\xfe" + b'"}')
        elif kind == "blank":
            lines.append(b"   ")
        else:
            lines.append(draw(st.text(max_size=20)).replace("\n", " ").encode())
    return lines


def write_lines(path: Path, lines: list[bytes], final_newline: bool) -> None:
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline and lines else b""))


def assert_names_file_and_line(error: Exception, path: Path, num_lines: int) -> None:
    """An InputError names the file; a line number, when given, is a line of the file."""
    message = str(error)
    assert "Traceback" not in message and "\n" not in message, message
    if isinstance(error, InputError):
        assert error.path == str(path), message
        assert message.startswith(str(path)), message
        if error.line is not None:
            assert 1 <= error.line <= max(num_lines, 1), message
    else:
        assert str(path) in message or path.name in message, message


# --------------------------------------------------------------------------- problem files

def problem_records(task_name: str) -> st.SearchStrategy:
    small_int = st.integers(0, 10**6)
    words = st.text(alphabet="abcdefgh xyz?", min_size=1, max_size=30).filter(str.strip)
    if task_name in ("gsm8k", "demo"):
        return st.builds(lambda q, n: {"question": q, "answer": f"Add them.\n#### {n}"}, words, small_int)
    if task_name == "math":
        return st.builds(lambda q, n: {"problem": q, "solution": f"So it is $\\boxed{{{n}}}$.", "level": "Level 1"},
                         words, small_int)
    if task_name == "jsonl-math":
        return st.builds(lambda q, n, i: {"q": q, "a": f"\\boxed{{{n}}}", "key": f"p{i}"}, words, small_int, small_int)
    return st.builds(lambda q, n, i: {"q": q, "a": str(n), "key": f"p{i}"}, words, small_int, small_int)


def load_with(task_name: str, path: Path):
    from mcts_po.tasks import get_task

    if task_name == "jsonl":
        task = get_task("jsonl", question_field="q", answer_field="a", id_field="key")
    elif task_name == "jsonl-math":
        task = get_task("jsonl", question_field="q", answer_field="a", id_field="key", answer_type="math")
    else:
        task = get_task(task_name)
    return task.load(split="test", path=str(path))


PROBLEM_TASKS = ("gsm8k", "demo", "math", "jsonl", "jsonl-math")


@pytest.mark.parametrize("task_name", PROBLEM_TASKS)
def test_fuzzed_problem_files_load_or_fail_naming_file_and_line(task_name, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"problems-{task_name}")

    @FUZZ
    @given(lines=jsonl_lines(problem_records(task_name), mutated_record), final_newline=st.booleans())
    def check(lines, final_newline):
        path = folder / "problems.jsonl"
        write_lines(path, lines, final_newline)
        try:
            problems = load_with(task_name, path)
        except (InputError, UserError) as error:
            assert_names_file_and_line(error, path, len(lines))
            return
        assert problems, "a load that succeeds returns problems"
        for problem in problems:
            assert isinstance(problem.id, str) and problem.id
            assert isinstance(problem.question, str) and problem.question.strip()
            assert isinstance(problem.answer, str) and problem.answer.strip()

    check()


def test_problem_file_errors_point_at_the_bad_line(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?"}\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_with("gsm8k", path)
    assert str(caught.value) == f"{path}:2: missing field 'answer' (fields present: question)"


def test_search_cli_reports_a_bad_problem_file_in_one_line(tmp_path, capsys):
    from mcts_po.cli import main

    path = tmp_path / "problems.jsonl"
    path.write_bytes(b'{"question": "1+1?", "answer": "#### 2"}\n{"question": \n')
    code = main(["search", "--task", "gsm8k", "--data", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == [f"mcts-po search: error: {path}:2: invalid JSON (Expecting value at column 14)"]


# --------------------------------------------------------------------------- tree files

def small_tree_dict(problem_id: str, answer_text: str, correct: bool) -> dict[str, Any]:
    from mcts_po.search.tree import Tree

    tree = Tree.new(problem_id=problem_id, question="What is 2 + 3?", gold_answer="5", task="demo",
                    sampling={"step_delimiter": "\n"})
    tree.root.visits, tree.root.value_sum, tree.root.q = 3, 0.0, 0.0
    first = tree.add_child(0, text="2 + 3 = 5", num_tokens=5, logprob_sum=-1.0, prior=0.6, visits=2,
                           value_sum=1.0, q=0.5, self_eval=0.8, wave=0)
    tree.add_child(0, text="2 + 3 = 6", num_tokens=5, logprob_sum=-2.0, prior=0.4, visits=1,
                   value_sum=-1.0, q=-1.0, terminal=True, terminal_reason="answer", answer="6", correct=False, wave=0)
    tree.add_child(first.node_id, text=answer_text, num_tokens=4, logprob_sum=-0.5, prior=1.0, visits=1,
                   value_sum=1.0 if correct else -1.0, q=1.0 if correct else -1.0, terminal=True,
                   terminal_reason="answer", answer="5" if correct else "7", correct=correct, wave=1)
    return tree.to_dict()


@st.composite
def valid_tree_records(draw) -> dict[str, Any]:
    index = draw(st.integers(0, 99))
    correct = draw(st.booleans())
    return small_tree_dict(f"p{index}", "The answer is 5." if correct else "The answer is 7.", correct)


@st.composite
def mutated_tree(draw, valid: dict[str, Any]) -> dict[str, Any]:
    """A tree with a field of the tree, or of one of its nodes, dropped, retyped or added."""
    record = json.loads(json.dumps(valid))
    if draw(st.booleans()):
        return draw(mutated_record(record))
    node_index = draw(st.integers(0, len(record["nodes"]) - 1))
    record["nodes"][node_index] = draw(mutated_record(record["nodes"][node_index]))
    return record


ODD_NODE_VALUES = {
    "kind": st.sampled_from(["root", "plan", "step", "", "leaf"]),
    "depth": st.integers(-2, 50),
    "text": st.text(max_size=30),
    "num_tokens": st.integers(-5, 10**6),
    "logprob_sum": st.floats(-1e6, 1e6),
    "prior": st.floats(-1.0, 1e6),
    "num_samples": st.integers(-1, 100),
    "visits": st.integers(-3, 10**6),
    "value_sum": st.floats(-1e9, 1e9),
    "q": st.floats(-1e3, 1e3),
    "self_eval": st.one_of(st.none(), st.floats(-2.0, 2.0)),
    "rollout_value": st.one_of(st.none(), st.floats(-2.0, 2.0)),
    "rollout_text": st.one_of(st.none(), st.text(max_size=20)),
    "initial_value": st.one_of(st.none(), st.floats(-5.0, 5.0)),
    "terminal": st.booleans(),
    "terminal_reason": st.sampled_from(["", "answer", "eos", "max_depth", "max_tokens", "why"]),
    "answer": st.one_of(st.none(), st.text(max_size=10)),
    "correct": st.one_of(st.none(), st.booleans()),
    "wave": st.integers(-5, 100),
}
ODD_TREE_VALUES = {
    "problem_id": st.text(max_size=10),
    "question": st.text(max_size=30),
    "gold_answer": st.text(max_size=10),
    "task": st.text(max_size=10),
    "tree_kind": st.sampled_from(["step", "plan", "", "forest"]),
    "prompt": st.text(max_size=30),
    "seed": st.integers(-10**12, 10**12),
    "sampling": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    "search_config": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    "token_counts": st.dictionaries(st.text(max_size=8), st.integers(-10, 10**6), max_size=3),
    "extra": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
}


@st.composite
def odd_tree(draw, valid: dict[str, Any]) -> dict[str, Any]:
    """A tree whose fields keep their JSON types but take strange values (negative visits,
    out-of-range values, unknown kinds, empty texts...)."""
    record = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            name = draw(st.sampled_from(sorted(ODD_TREE_VALUES)))
            record[name] = draw(ODD_TREE_VALUES[name])
        else:
            node = record["nodes"][draw(st.integers(0, len(record["nodes"]) - 1))]
            name = draw(st.sampled_from(sorted(ODD_NODE_VALUES)))
            node[name] = draw(ODD_NODE_VALUES[name])
    return record


tree_file_lines = jsonl_lines(valid_tree_records(), mutated_tree, odd=odd_tree)


def run_cli(argv: list[str]) -> tuple[int, str]:
    from mcts_po.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def assert_clean_cli_failure(command: str, code: int, err: str, path: Path) -> None:
    """Exit 0, or exit 2 with one `mcts-po CMD: error: FILE...` line (progress bars aside)."""
    if code == 0:
        return
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("mcts-po")]
    assert len(lines) == 1 and "Traceback" not in err, err
    prefix = f"mcts-po {command}: error: "
    assert lines[0].startswith(prefix), err
    assert str(path) in lines[0] or "no trees" in lines[0], err
    match = re.match(re.escape(prefix + str(path)) + r":(\d+):", lines[0])
    if match:
        assert 1 <= int(match.group(1)) <= path.read_bytes().count(b"\n") + 1, err


def test_fuzzed_tree_files_through_every_reader(tmp_path_factory):
    """The three ways into the tree reader (extract's `read_trees`, show/export's
    `read_trees(..., require_trees=True)`, the search runner's `read_tree_file`) agree: a file is read whole, or rejected with an InputError naming the file and line."""
    import functools

    from mcts_po.tree_io import read_tree_file as load_for_runner
    from mcts_po.tree_io import read_trees

    load_for_graphs = functools.partial(read_trees, require_trees=True)

    folder = tmp_path_factory.mktemp("trees")

    @FUZZ
    @given(lines=tree_file_lines, final_newline=st.booleans())
    def check(lines, final_newline):
        path = folder / "trees.jsonl"
        write_lines(path, lines, final_newline)
        outcomes = []
        for reader in (read_trees, load_for_graphs, load_for_runner):
            try:
                trees = reader([path]) if reader is read_trees else reader(path)
                outcomes.append(("ok", len(trees)))
            except (InputError, UserError) as error:
                assert_names_file_and_line(error, path, len(lines))
                outcomes.append(("error", getattr(error, "line", None)))
        # graphs' reader also rejects a file with no trees at all; otherwise they agree
        if outcomes[0] == ("ok", 0):
            assert outcomes[2] == ("ok", 0)
        else:
            assert outcomes[0] == outcomes[1] == outcomes[2], outcomes

    check()


@pytest.mark.parametrize("command", ["extract", "show", "export"])
def test_fuzzed_tree_files_through_the_cli(command, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"cli-{command}")

    @FUZZ_SLOW_READER
    @given(lines=tree_file_lines, final_newline=st.booleans())
    def check(lines, final_newline):
        path = folder / "trees.jsonl"
        write_lines(path, lines, final_newline)
        out = Path(tempfile.mkdtemp(dir=folder))
        if command == "extract":
            argv = ["extract", "--trees", str(path), "--format", "step-dpo", "--format", "tpo", "--format", "sft",
                    "--out", str(out), "--no-progress"]
        elif command == "show":
            argv = ["show", str(path), "--width", "100"]
        else:
            argv = ["export", str(path), "--format", "json", "--out", str(out)]
        code, err = run_cli(argv)
        assert_clean_cli_failure(command, code, err, path)
        shutil.rmtree(out, ignore_errors=True)

    check()


def test_fuzzed_trees_file_on_search_resume(tmp_path_factory):
    """A run folder whose trees.jsonl is damaged: the rerun repairs a torn last line or stops
    with an InputError naming the file and line, before any model is loaded."""
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job

    class NoModel:
        name, model = "none", "none"

        def render_chat(self, messages, add_generation_prompt=True):
            raise RuntimeError("the engine must not be reached")

        generate = render_chat

        def close(self):
            pass

    folder = tmp_path_factory.mktemp("resume")

    @FUZZ
    @given(lines=tree_file_lines, final_newline=st.booleans())
    def check(lines, final_newline):
        out = Path(tempfile.mkdtemp(dir=folder))
        path = out / "trees.jsonl"
        write_lines(path, lines, final_newline)
        job = SearchJob(out=str(out), task="demo", limit=2, search=SearchConfig(num_simulations=1),
                        greedy_baseline=False, progress=False)
        try:
            run_search_job(job, backend=NoModel())
        except (InputError, UserError) as error:
            assert_names_file_and_line(error, path, len(lines))
        except RuntimeError as error:
            assert "the engine must not be reached" in str(error)  # the file was accepted
        shutil.rmtree(out, ignore_errors=True)

    check()


def test_tree_with_a_wrongly_typed_node_field_names_file_line_and_field(tmp_path):
    from mcts_po.tree_io import read_trees

    record = small_tree_dict("p1", "The answer is 5.", True)
    record["nodes"][2]["visits"] = "many"
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(small_tree_dict("p0", "The answer is 5.", True)) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(InputError) as caught:
        read_trees([path])
    assert str(caught.value).startswith(f"{path}:2: not a valid tree: ")
    assert "visits" in str(caught.value)


@pytest.mark.parametrize("content, line, message", [
    (b'{"problem_id": "a"}\n[1, 2]\n', 2, "not a greedy-baseline record (needs a text 'problem_id')"),
    (b'{"problem_id": 7}\n', 1, "not a greedy-baseline record (needs a text 'problem_id')"),
    (b'{"problem_id": "a"}\n{"problem_id": "b\xff"}\n', 2, "not valid UTF-8"),
])
def test_damaged_greedy_file_on_resume_names_file_and_line(tmp_path, content, line, message):
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job

    (tmp_path / "greedy.jsonl").write_bytes(content)
    job = SearchJob(out=str(tmp_path), task="demo", limit=1, search=SearchConfig(num_simulations=1), progress=False)
    with pytest.raises(InputError) as caught:
        run_search_job(job, backend=object())
    assert str(caught.value) == f"{tmp_path / 'greedy.jsonl'}:{line}: {message}"


def test_torn_tail_cut_inside_a_multibyte_character_is_repaired(tmp_path):
    """A kill can cut a line inside a UTF-8 character (trees are written with ensure_ascii=False)."""
    from mcts_po.search_runner import _finished_tree_ids

    whole = json.dumps(small_tree_dict("p0", "The answer is 5.", True), ensure_ascii=False)
    torn = json.dumps(small_tree_dict("p1", "Die Lösung ist 5 — fünf.", True), ensure_ascii=False).encode("utf-8")
    cut = torn.index("ö".encode("utf-8")) + 1  # between the two bytes of "ö"
    path = tmp_path / "trees.jsonl"
    path.write_bytes(whole.encode("utf-8") + b"\n" + torn[:cut])
    assert _finished_tree_ids(path) == {"p0"}
    assert path.read_bytes() == whole.encode("utf-8") + b"\n"

"""The page for teachers is built from the book's records and is up to date."""
from pathlib import Path

from dlbook import teaching
from dlbook.execute import chapters_of

ROOT = Path(__file__).resolve().parents[1]


def test_committed_page_is_up_to_date():
    committed = (ROOT / teaching.PAGE).read_text()
    assert committed == teaching.page_text(ROOT), "chapters/teaching.md is stale: run `make teaching`"
    assert (ROOT / teaching.FIGURE).is_file()


def test_prerequisites_cover_the_book_and_point_backwards():
    numbers = [teaching.chapter_number(nbs[0].parent.as_posix()) for _, nbs in chapters_of(ROOT)]
    assert sorted(teaching.PREREQUISITES) == sorted(numbers)
    for chapter, needs in teaching.PREREQUISITES.items():
        assert all(n < chapter for n in needs), (chapter, needs)


def test_course_plans_respect_prerequisites():
    for name, weeks in teaching.COURSES.items():
        seen: set[str] = set()
        for week in weeks:
            for chapter in week:
                missing = [p for p in teaching.PREREQUISITES[chapter] if p not in seen | set(week)]
                covered_elsewhere = [p for p in missing if any(p in w for w in weeks)]
                assert not covered_elsewhere, f"{name}: chapter {chapter} comes before {covered_elsewhere}"
            seen |= set(week)


def test_notebook_facts_read_the_cells():
    facts = teaching.notebook_facts(ROOT / "chapters" / "12_gnn" / "node_classification.ipynb")
    assert "Cora" in facts["data"] and facts["extras"] == ["graphs"]
    facts = teaching.notebook_facts(ROOT / "chapters" / "07_rnn" / "language_model.ipynb")
    assert "Tiny Shakespeare" in facts["data"]

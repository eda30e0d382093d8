"""Every row of the README's results tables must be what `irnn report` computes from the committed
run logs under results/ (so a README number can never drift from the evidence)."""

import re
from pathlib import Path

from irnn.report.report import write_report

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- results-table: (?P<runs>[^>]+?) -->\n(?P<table>.*?)<!-- /results-table -->", re.S)


def readme_blocks():
    text = (REPO / "README.md").read_text()
    blocks = [(m["runs"].split(), m["table"]) for m in BLOCK.finditer(text)]
    assert blocks, "the README has no results table marked <!-- results-table: RUN_DIR... -->"
    return blocks


def test_readme_results_rows_equal_the_regenerated_report(tmp_path):
    for i, (run_dirs, table) in enumerate(readme_blocks()):
        md_path = write_report([REPO / d for d in run_dirs], tmp_path / f"report{i}")[0]
        report_rows = {line.strip() for line in md_path.read_text().splitlines() if line.startswith("| ")}
        rows = [line.strip() for line in table.splitlines() if line.startswith("| ") and not line.startswith("|---")]
        assert len(rows) >= 2, f"results table for {run_dirs} is empty"
        for row in rows:
            assert row in report_rows, (
                f"README row not in the report regenerated from {' '.join(run_dirs)}:\n{row}\n"
                f"regenerate the report with: irnn report {' '.join(run_dirs)} -o DIR, and copy its rows")

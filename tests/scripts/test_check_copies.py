"""scripts/check_copies.py: a block of Python or SQL written twice fails `make lint`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emps.settings import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "check_copies.py"

PYTHON_BLOCK = '''
def {name}(rows, settings):
    """Each row's severity."""  # docstrings and comments do not make code different
    total = 0
    for row in rows:
        if row.probability >= settings.thresholds.severity_high:
            total += 2
        elif row.probability >= settings.thresholds.severity_medium:
            total += 1
        else:
            total -= 1
    return total / max(len(rows), 1)
'''

SQL_BLOCK = """
select
    equipment_id,
    date_trunc('day', ts) as day,
    count(*) as readings,
    avg(temperature) as mean_temperature
from {{{{ ref('stg_sensor_readings') }}}}
where ts >= now() - interval '7 days'
group by equipment_id, date_trunc('day', ts)
having count(*) > 10
order by equipment_id, day
"""

IMPORT_CTES = """with tasks as (
    select * from {{ ref('stg_tasks') }}
),

equipment as (
    select * from {{ ref('stg_equipment') }}
),

alerts as (
    select * from {{ ref('stg_alerts') }}
),

sites as (
    select * from {{ source('raw', 'sites') }}
),

"""


def copies(*files: Path, min_lines: int = 8) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--min-lines", str(min_lines), *map(str, files)],
        capture_output=True,
        text=True,
    )


def test_a_function_copied_under_another_name_fails_with_both_places(tmp_path: Path):
    """The same body in two modules, reindented and commented differently, is named with the
    files and lines of each copy; the exit status fails `make lint`."""
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("x = 1\n" + PYTHON_BLOCK.format(name="severity_points"))
    second.write_text(
        "class Scores:\n"
        + "".join(f"    {line}\n" for line in PYTHON_BLOCK.format(name="points").splitlines())
    )
    found = copies(first, second)
    assert found.returncode == 1
    assert f"{first}:" in found.stdout and f"{second}:" in found.stdout
    assert "1 copied block(s)" in found.stdout


def test_sql_copied_in_another_case_and_spacing_fails(tmp_path: Path):
    """A query written again in upper case and other spacing is the same query."""
    first, second = tmp_path / "daily.sql", tmp_path / "daily_again.sql"
    first.write_text(SQL_BLOCK)
    second.write_text("-- the same, shouted\n" + SQL_BLOCK.upper().replace("    ", "\t"))
    assert copies(first, second).returncode == 1


def test_shorter_runs_and_python_lists_of_names_pass(tmp_path: Path):
    """A copy shorter than the minimum passes, and so does the same list of names in two Python
    modules (an expected frame written out): it declares, it does not compute."""
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text(PYTHON_BLOCK.format(name="one"))
    second.write_text(PYTHON_BLOCK.format(name="two"))
    assert copies(first, second, min_lines=9).returncode == 1  # the 9 lines under `def`
    assert copies(first, second, min_lines=10).returncode == 0
    names = "".join(f"    'column_{n}',\n" for n in range(20))
    first.write_text(f"EXPECTED = [\n{names}    'last_column',\n]\n")
    second.write_text(f"COLUMNS = (\n{names}    'other_column',\n)\n")
    assert copies(first, second, min_lines=3).returncode == 0


def test_a_model_listing_again_the_columns_it_selects_from_fails(tmp_path: Path):
    """A mart that writes out again the columns of the staging model it reads copies it: it
    fails, where selecting `*` from that model passes."""
    columns = "".join(f"    column_{n},\n" for n in range(10))
    staging, mart = tmp_path / "stg_files.sql", tmp_path / "mart_files.sql"
    staging.write_text(f"select\n    id as file_id,\n{columns}    warnings\nfrom source\n")
    mart.write_text(f"select\n    file_id,\n{columns}    array_to_string(warnings)\nfrom files\n")
    found = copies(staging, mart)
    assert found.returncode == 1 and "10 lines copied" in found.stdout
    mart.write_text("select files.*, array_to_string(files.warnings) as text\nfrom files\n")
    assert copies(staging, mart).returncode == 0


def test_dbt_models_of_the_same_inputs_may_open_with_the_same_import_ctes(tmp_path: Path):
    """jaffle-shop's import CTEs, one per ref, are how every model opens: two models of the same
    inputs are no copy for that, while the same logic after them still is one."""
    first, second = tmp_path / "a.sql", tmp_path / "b.sql"
    first.write_text("".join((IMPORT_CTES, "select count(*) from tasks\n")))
    second.write_text("".join((IMPORT_CTES, "select max(priority) from tasks\n")))
    assert copies(first, second).returncode == 0
    first.write_text("".join((IMPORT_CTES, SQL_BLOCK)))
    second.write_text("".join((IMPORT_CTES, SQL_BLOCK)))
    assert copies(first, second).returncode == 1

"""scripts/install into a temporary root (--root DIR, as a DESTDIR): what it puts
where, that systemd accepts the installed unit with everything it names in place,
that a second run keeps an operator's files, and that --uninstall takes back what
the install put there and nothing else. Nothing outside the temporary root is
touched (the test needs no root)."""

from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install"
CHECKS = sorted(p.name for p in (REPO / "checks").iterdir() if p.is_file())


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=600,  # a virtualenv and pip from the local package index
        check=False,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One install into a temporary root, shared by the tests that only look."""
    root = tmp_path_factory.mktemp("root")
    res = install(root)
    assert res.returncode == 0, res.stdout + res.stderr
    yield root


def test_the_command_on_path_is_the_venvs_dbha_from_this_checkout(root: Path) -> None:
    link = root / "usr/local/bin/dbha"
    assert link.is_symlink() and os.readlink(link) == "/opt/dbha/bin/dbha"
    venv = root / "opt/dbha"
    assert (venv / "bin/dbha").read_text().splitlines()[0] in (
        "#!/opt/dbha/bin/python",
        "#!/opt/dbha/bin/python3",
    )
    for f in (venv / "bin").iterdir():  # the venv runs as /opt/dbha, not from DIR
        if f.is_file() and not f.is_symlink():
            assert str(root) not in f.read_text(errors="replace"), f
    assert str(root) not in (venv / "pyvenv.cfg").read_text()
    # The install's Python runs the installed dbha (not the checkout's, not editable).
    py = str(venv / "bin/python")
    res = subprocess.run(
        [py, "-c", "import dbha, psycopg, pymysql; print(dbha.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
    )
    assert res.stdout.strip().startswith(str(venv / "lib")), res.stdout
    res = subprocess.run(
        [py, str(venv / "bin/dbha"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert res.returncode == 0 and "switchover" in res.stdout, res.stderr


def test_the_checks_run_with_the_installs_python(root: Path) -> None:
    where = root / "opt/dbha/checks"
    assert sorted(p.name for p in where.iterdir()) == CHECKS
    for name in CHECKS:
        path = where / name
        assert path.stat().st_mode & 0o777 == 0o755, name
        assert path.read_text().splitlines()[0] == "#!/opt/dbha/bin/python", name
        # Apart from the first line, the checkout's script as it is.
        src = (REPO / "checks" / name).read_text().splitlines()[1:]
        assert path.read_text().splitlines()[1:] == src, name
    res = subprocess.run(
        [str(root / "opt/dbha/bin/python"), str(where / "dbha-check-postgres"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0 and "SELECT 1" in res.stdout, res.stderr


def test_the_unit_the_cron_entry_the_config_directory_and_the_docs(root: Path) -> None:
    unit_path = root / "etc/systemd/system/dbha@.service"
    assert unit_path.read_text() == (REPO / "conf/dbha@.service").read_text()
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read_string(unit_path.read_text())
    doc = unit["Unit"]["Documentation"]
    assert doc.startswith("file:/")
    assert (root / doc.removeprefix("file:/")).is_file(), doc
    prog = unit["Service"]["ExecStart"].split()[0]
    target = os.readlink(root / prog.lstrip("/"))  # absolute: the root's own file
    assert target == "/opt/dbha/bin/dbha" and os.access(root / target.lstrip("/"), os.X_OK)

    cron = (root / "etc/cron.d/dbha").read_text().splitlines()
    jobs = [ln for ln in cron if ln.strip() and not ln.startswith("#") and "=" not in ln[:12]]
    assert jobs == []  # installed disabled: a host runs the unit or cron, not both
    assert any("/usr/local/bin/dbha check" in ln for ln in cron)
    assert stat.S_IMODE((root / "etc/dbha").stat().st_mode) == 0o750
    assert list((root / "etc/dbha").iterdir()) == []  # no config is made up for the operator
    examples = root / "usr/share/doc/dbha/examples"
    assert (examples / "postgresql-a.toml").is_file() and (examples / "dbha.cron").is_file()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_installed_unit(root: Path) -> None:
    # verify --root looks up every unit and program under DIR: give the root the
    # host's own system units (sysinit.target and the rest), as an OS would have.
    units = root / "usr/lib/systemd/system"
    if not units.exists():
        shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    # And the OS's own programs the unit runs besides dbha: ExecReload's /bin/kill.
    kill = root / "bin/kill"
    if not kill.exists():
        kill.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path("/bin/kill").resolve(), kill)

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", "dbha@pg.service"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    res = verify()
    assert res.returncode == 0, res.stderr
    assert "dbha@" not in res.stderr, res.stderr
    # And it does look: without the venv's dbha, ExecStart is not executable.
    dbha = root / "opt/dbha/bin/dbha"
    dbha.rename(dbha.with_name("dbha.away"))
    try:
        res = verify()
    finally:
        dbha.with_name("dbha.away").rename(dbha)
    assert res.returncode != 0 and "/usr/local/bin/dbha" in res.stderr, res.stderr


def copy_of(root: Path, tmp_path: Path) -> Path:
    """A copy of the shared install to change (its files name no path of DIR)."""
    copy = tmp_path / "root"
    shutil.copytree(root, copy, symlinks=True)
    return copy


def test_a_second_run_keeps_the_operators_files_and_uninstall_takes_back_the_rest(
    root: Path, tmp_path: Path
) -> None:
    root = copy_of(root, tmp_path)
    config = root / "etc/dbha/pg.toml"
    config.write_text("# the operator's\n")
    (root / "etc/dbha").chmod(0o700)
    cron = root / "etc/cron.d/dbha"
    enabled = cron.read_text().replace("# * * * * * root", "* * * * * root")
    cron.write_text(enabled)
    (root / "opt/dbha/checks/dbha-check-tcp").write_text("stale\n")

    res = install(root)
    assert res.returncode == 0, res.stderr
    assert config.read_text() == "# the operator's\n"
    assert stat.S_IMODE((root / "etc/dbha").stat().st_mode) == 0o700
    assert cron.read_text() == enabled
    assert "kept the existing /etc/cron.d/dbha" in res.stdout
    tcp = (root / "opt/dbha/checks/dbha-check-tcp").read_text().splitlines()
    assert tcp[1:] == (REPO / "checks/dbha-check-tcp").read_text().splitlines()[1:]

    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "dbha@pg.service").symlink_to("/etc/systemd/system/dbha@.service")
    res = install(root, "--uninstall")
    assert res.returncode == 1 and "systemctl disable --now dbha@pg.service" in res.stderr
    assert (root / "opt/dbha/bin/dbha").exists()  # refused: nothing removed
    (wants / "dbha@pg.service").unlink()

    res = install(root, "--uninstall")
    assert res.returncode == 0, res.stderr
    for gone in (
        "opt/dbha",
        "usr/local/bin/dbha",
        "etc/systemd/system/dbha@.service",
        "usr/share/doc/dbha",
    ):
        assert not os.path.lexists(root / gone), gone
    assert config.read_text() == "# the operator's\n"
    assert cron.read_text() == enabled  # changed by the operator: kept
    assert "kept /etc/cron.d/dbha" in res.stdout


def test_uninstall_removes_an_unchanged_cron_entry_and_an_empty_config_directory(
    root: Path, tmp_path: Path
) -> None:
    root = copy_of(root, tmp_path)
    res = install(root, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert not (root / "etc/cron.d/dbha").exists()
    assert not (root / "etc/dbha").exists()


def test_an_opt_dbha_that_is_not_the_installs_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    other = root / "opt/dbha"
    other.mkdir(parents=True)
    (other / "something").write_text("not dbha's\n")
    res = install(root)
    assert res.returncode == 1 and "/opt/dbha exists and was not made by this install" in res.stderr
    assert sorted(p.name for p in other.iterdir()) == ["something"]
    res = install(root, "--uninstall")
    assert res.returncode == 0 and (other / "something").exists()
    assert "kept /opt/dbha" in res.stdout

"""The documentation stands on its own and says what napari and CI really do.

- the README's Debian packages are the ones CI installs;
- user documents send nobody to files outside the repository (the maintainers' fixtures);
- every menu path the documents quote is a menu entry of a real napari viewer;
- every link to a file of the repository points to a file that exists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GITHUB = "https://github.com/napari-sam2/napari-sam2"
BLOB_URL = re.compile(re.escape(GITHUB) + r"/blob/main/([^\s)#]+)")
RAW_URL = re.compile(
    re.escape("https://raw.githubusercontent.com/napari-sam2/napari-sam2/main/") + r"([^\s)]+)"
)
RELATIVE_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)(#[^)\s]*)?\)")
# **File > Open Sample > napari-sam2** or *File > Save Selected Layers...*: bold or italic
MENU_PATH = re.compile(r"\*{1,2}((?:File|Edit|View|Layers|Plugins|Window|Help) > [^*]+)\*{1,2}")

USER_DOCS = ["README.md", "docs/user_guide.md", "docs/cli.md", "sample_data/README.md"]
# Names of the maintainers' fixture folder and of design notes that are not in the repository.
OUTSIDE_REFERENCES = re.compile(
    r"shared/|\.\./shared|DESIGN\.md|SEMANTICS|HYPERPARAMS|reference/|\bdecision D\d"
)


def _source_checkout() -> None:
    if not (REPO_ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout: the documents are not here")


def _documents() -> list[Path]:
    names = ["README.md", "CHANGELOG.md", "CONTRIBUTING.md", "sample_data/README.md"]
    paths = [REPO_ROOT / name for name in names] + sorted((REPO_ROOT / "docs").glob("*.md"))
    return [path for path in paths if path.is_file()]


def _ci_apt_packages() -> list[str]:
    """The APT_PACKAGES array of .ci/run, as bash reads it."""
    array = "$(sed -n '/^APT_PACKAGES=(/,/^)/p' .ci/run)"
    script = f'eval "{array}"; printf "%s\\n" "${{APT_PACKAGES[@]}}"'
    result = subprocess.run(
        ["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def _readme_apt_packages() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    commands = [
        block.replace("\\\n", " ")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        if "apt-get install" in block
    ]
    assert len(commands) == 1, "the README should have one apt-get install command"
    words = commands[0].split("apt-get install", 1)[1].split()
    return [word for word in words if not word.startswith("-")]


def test_readme_installs_the_debian_packages_ci_installs():
    _source_checkout()
    ci = _ci_apt_packages()
    readme = _readme_apt_packages()
    assert {"xvfb", "xauth", "libxcb-cursor0", "libegl1"} <= set(ci)
    assert sorted(readme) == sorted(ci), (
        f"only in README: {sorted(set(readme) - set(ci))}, only in .ci/run: "
        f"{sorted(set(ci) - set(readme))}"
    )
    assert len(readme) == len(set(readme))


def test_readme_and_ci_install_the_pyqt6_extra():
    _source_checkout()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[pyqt6]"' in readme
    assert 'pip install -e ".[testing,pyqt6]"' in ci
    assert ".[pyqt5]" not in readme and "pyqt5]" not in ci


@pytest.mark.parametrize("name", [*USER_DOCS, "docs/architecture.md", "CHANGELOG.md"])
def test_documents_send_nobody_outside_the_repository(name):
    _source_checkout()
    path = REPO_ROOT / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this checkout")
    hits = [
        f"{name}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_REFERENCES.search(line)
    ]
    assert not hits, "references to files a user does not have:\n" + "\n".join(hits)


def test_command_line_help_sends_nobody_outside_the_repository(capsys):
    from napari_sam2.cli import main

    texts = []
    for argv in (["--help"], ["track", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        texts.append(capsys.readouterr().out)
    assert "--out" in texts[1]  # the help of the track command was read
    hits = [line for text in texts for line in text.splitlines() if OUTSIDE_REFERENCES.search(line)]
    assert not hits, hits


def test_links_to_repository_files_resolve():
    _source_checkout()
    broken = []
    checked = 0
    for doc in _documents():
        text = doc.read_text(encoding="utf-8")
        targets = [REPO_ROOT / target for target in BLOB_URL.findall(text)]
        targets += [REPO_ROOT / target for target in RAW_URL.findall(text)]
        targets += [doc.parent / target for target, _ in RELATIVE_LINK.findall(text)]
        for target in targets:
            checked += 1
            if not target.exists():
                broken.append(f"{doc.relative_to(REPO_ROOT)} -> {target}")
    assert checked > 10
    assert not broken, broken


def _github_anchor(heading: str) -> str:
    anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return anchor.replace(" ", "-")


def test_readme_anchors_name_its_headings():
    _source_checkout()
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    used = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert "contributing" in used
    assert used <= anchors, used - anchors


def test_readme_opens_with_a_screenshot_that_renders_off_github():
    _source_checkout()
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"Homepage" = "{GITHUB}"' in pyproject
    first_paragraph = text.split("\n\n")[1]
    image = re.fullmatch(r"!\[[^\]]+\]\((\S+)\)", first_paragraph.strip())
    assert image, f"the README should start with a screenshot, not {first_paragraph[:80]!r}"
    # PyPI and the napari hub show the README without the repository: only absolute URLs work.
    (path,) = RAW_URL.findall(image.group(1))
    assert path.startswith("docs/images/") and (REPO_ROOT / path).is_file()
    assert not re.search(r"!\[[^\]]*\]\((?!https://)", text), "relative image paths"


def test_readme_links_the_contributing_guide_and_the_changelog():
    _source_checkout()
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Contributing" in text
    assert f"{GITHUB}/blob/main/CONTRIBUTING.md" in text
    assert f"{GITHUB}/blob/main/CHANGELOG.md" in text
    assert 'python -m pytest -m "not slow"' in text


def _menu_paths(menu, above: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    paths = set()
    for action in menu.actions():
        if action.isSeparator() or not action.text():
            continue
        path = (*above, action.text().replace("&", ""))
        paths.add(path)
        if action.menu() is not None:
            paths |= _menu_paths(action.menu(), path)
    return paths


def test_menu_paths_in_the_documents_are_napari_menu_entries(make_napari_viewer):
    _source_checkout()
    viewer = make_napari_viewer()
    entries = _menu_paths(viewer.window._qt_window.menuBar())
    assert ("Plugins", "SAM 2 tracking (napari-sam2)") in entries
    assert ("File", "Open Sample", "napari-sam2", "Dividing cells (time-lapse)") in entries

    quoted = {}
    for doc in _documents():
        for match in MENU_PATH.finditer(doc.read_text(encoding="utf-8")):
            text = " ".join(match.group(1).split())
            quoted[tuple(part.strip() for part in text.split(" > "))] = doc.name
    assert ("Plugins", "SAM 2 tracking (napari-sam2)") in quoted
    assert ("File", "Open Sample", "napari-sam2") in quoted
    unknown = [f"{doc}: {' > '.join(path)}" for path, doc in quoted.items() if path not in entries]
    assert not unknown, f"menu entries napari does not have: {unknown}"

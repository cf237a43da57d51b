"""What main pins is kept in memory (adapters/pins.py) and carried from one main to the next by
re-reading only the values files the new main changed: after any change made on main (by a
person, by a merge), the answers must be those of a repository object that reads everything
afresh, and a snapshot of the older main keeps its own answers."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from ferry.adapters import pins
from ferry.adapters.git import git
from ferry.adapters.gitops import GitOpsRepo, MainSnapshot
from ferry.adapters.pins import UNSURE
from ferry.adapters.scaffold import render_files, scaffold
from ferry.core.policy import PolicyError
from ferry.core.values import ValuesError
from tests.helpers import commit_by_hand, digest_of, pin_digest

ENVS = ("dev", "staging", "prod")


def answers(repo: GitOpsRepo, services: list[str]) -> dict[tuple[str, str], object]:
    """Every question a decision asks of main, for SERVICES in every environment (an error is
    an answer too: its type)."""
    main = repo.at_main()
    out: dict[tuple[str, str], object] = {}
    for s in services:
        for e in ENVS:
            try:
                out[(s, e)] = (main.values_exists(s, e), main.pinned(s, e), main.repository(s, e))
            except (ValuesError, PolicyError) as exc:
                out[(s, e)] = type(exc)
    return out


def fresh(remote: Path, workdir: Path) -> GitOpsRepo:
    """A repository object that has read nothing yet (nor kept anything on disk)."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir.parent / f"{workdir.name}.pins").unlink(missing_ok=True)
    return GitOpsRepo(remote=str(remote), workdir=workdir)


def add_service(clone: Path, service: str, env: str) -> None:
    path = f"envs/{env}/{service}/values.yaml"
    text = render_files([service], [env], "registry.example.com/shop")[path]
    (clone / path).parent.mkdir(parents=True, exist_ok=True)
    (clone / path).write_text(text)


def test_pins_follow_a_person_editing_adding_and_removing_values_files(tmp_path: Path) -> None:
    remote, clone = tmp_path / "gitops", tmp_path / "person"
    scaffold(remote, ["api", "web"])
    repo = GitOpsRepo(remote=str(remote), workdir=tmp_path / "work")
    before = repo.at_main()
    assert before.pinned("api", "dev") is None and before.values_exists("web", "staging")
    old_index = repo.pins(before.commit)

    def change(c: Path) -> None:
        pin_digest(c, "dev", "api", digest_of("by hand"))  # edited directly on main
        add_service(c, "db", "dev")  # a file added
        (c / "envs/staging/web/values.yaml").unlink()  # a file removed

    commit_by_hand(remote, clone, "a person's change", change)
    after = repo.at_main()
    assert after.commit != before.commit
    assert after.pinned("api", "dev") == digest_of("by hand")
    assert after.values_exists("db", "dev") and after.repository("db", "dev") == (
        "registry.example.com/shop/db"
    )
    assert not after.values_exists("web", "staging") and after.pinned("web", "staging") is None
    assert repo.services() == ["api", "db", "web"]
    # The older snapshot still answers from its own commit.
    assert before.pinned("api", "dev") is None and before.values_exists("web", "staging")
    assert not before.values_exists("db", "dev")
    # Carried, not read again: an environment no change touched is the same object.
    new_index = repo.pins(after.commit)
    assert new_index.by_env["prod"] is old_index.by_env["prod"]
    assert new_index.by_env["dev"] is not old_index.by_env["dev"]
    assert answers(repo, ["api", "web", "db"]) == answers(
        fresh(remote, tmp_path / "fresh"), ["api", "web", "db"]
    )
    assert not (tmp_path / "work.pins").exists()  # a worker keeps its pins in memory only


def test_pins_carried_over_many_changes_agree_with_reading_afresh(tmp_path: Path) -> None:
    """Random changes on main, each followed by the questions: the index carried from main to
    main answers as one built from nothing, including files it cannot read (they are read)."""
    remote, clone = tmp_path / "gitops", tmp_path / "person"
    services = [f"svc-{i}" for i in range(12)]
    scaffold(remote, services)
    repo = GitOpsRepo(remote=str(remote), workdir=tmp_path / "work")
    rnd = random.Random(12)
    asked = [*services, "new-1", "new-2"]
    for round_ in range(8):
        answers(repo, asked)  # the index of this main, to carry to the next

        def change(c: Path, round_: int = round_) -> None:
            for _ in range(rnd.randint(1, 4)):
                s, e = rnd.choice(asked), rnd.choice(ENVS)
                path = c / "envs" / e / s / "values.yaml"
                what = rnd.choice(["pin", "pin", "remove", "broken", "number"])
                if not path.exists():
                    add_service(c, s, e)
                elif what == "pin":
                    try:
                        pin_digest(c, e, s, digest_of(f"{round_}-{s}-{e}"))
                    except ValuesError:  # a file broken earlier: a person writes it anew
                        add_service(c, s, e)
                elif what == "remove":
                    path.unlink()
                elif what == "broken":
                    path.write_text("image: [unclosed\n")
                else:
                    path.write_text("image:\n  digest: 12\n  repository: r\n")

        commit_by_hand(remote, clone, f"round {round_}", change)
        carried = answers(repo, asked)
        assert carried == answers(fresh(remote, tmp_path / "fresh"), asked), round_
    broken = "envs/dev/svc-0/values.yaml"
    commit_by_hand(remote, clone, "broken", lambda c: (c / broken).write_text("image: [\n"))
    assert repo.pins(repo.main_commit()).entry("dev", "svc-0") is UNSURE
    assert answers(repo, asked) == answers(fresh(remote, tmp_path / "fresh"), asked)
    assert answers(repo, asked)[("svc-0", "dev")] is ValuesError


def test_a_bad_name_or_unknown_environment_is_refused_as_before(tmp_path: Path) -> None:
    scaffold(tmp_path / "gitops", ["api"])
    main = GitOpsRepo(remote=str(tmp_path / "gitops"), workdir=tmp_path / "work").at_main()
    with pytest.raises(PolicyError):
        main.pinned("api", "qa")
    with pytest.raises(PolicyError):
        main.values_exists("Not_A_Label", "dev")
    assert main.pinned("nobody", "dev") is None and not main.values_exists("nobody", "dev")


def cli_main(remote: Path, work: Path) -> MainSnapshot:
    """Main as a new CLI process sees it after a question about every service (services())."""
    repo = GitOpsRepo(remote=str(remote), workdir=work, keep_pins=True)
    repo.services()
    return repo.at_main()


def test_a_new_process_reads_only_blobs_it_has_not_read_before(tmp_path: Path) -> None:
    """What was read is kept by blob id beside the workdir (a blob's content never changes):
    the next process takes it from there; a file written by other code or for other keys, or
    one that is not such a file at all, is not used."""
    remote, work = tmp_path / "gitops", tmp_path / "work"
    scaffold(remote, ["api"])
    repo = GitOpsRepo(remote=str(remote), workdir=work, keep_pins=True)
    kept = tmp_path / "work.pins"
    # A command about one service reads its files, not main's pins whole.
    assert repo.at_main().pinned("api", "dev") is None and repo.at_main().values_exists(
        "api", "dev"
    )
    assert not kept.exists() and repo.pins_read(repo.main_commit()) is None
    commit = repo.main_commit()
    index = repo.pins(commit)
    assert kept.exists()
    layout = index.layout
    known = pins.load(kept, layout)
    blob = git("rev-parse", f"{commit}:envs/dev/api/values.yaml", cwd=remote)
    assert known[blob] == (None, "registry.example.com/shop/api")
    # Told otherwise about that blob, a new process believes it: it did not read the file.
    pins.save(kept, layout, {**known, blob: (digest_of("kept"), "elsewhere")})
    assert cli_main(remote, work).pinned("api", "dev") == digest_of("kept")
    # Kept for other keys, or not a pins file at all: read afresh.
    other = pins.Layout(layout.template, "image.tag", layout.repository_key)
    pins.save(kept, other, {blob: (digest_of("other keys"), "x")})
    assert cli_main(remote, work).pinned("api", "dev") is None
    kept.write_bytes(b"not marshal data")
    assert cli_main(remote, work).repository("api", "dev") == "registry.example.com/shop/api"
    assert pins.load(kept, layout)[blob] == (None, "registry.example.com/shop/api")


def test_a_new_process_at_the_same_main_takes_its_pins_whole_from_disk(tmp_path: Path) -> None:
    """The pins of the last commit a process read whole are kept too: a new process at that
    commit (`ferry status` again) lists no tree and reads no file; once main moves, they are not
    used, and the new main's are kept instead."""
    remote, work = tmp_path / "gitops", tmp_path / "work"
    scaffold(remote, ["api", "web"])
    first = cli_main(remote, work)
    kept = tmp_path / "work.pins"
    index = first._pins()
    assert index is not None
    layout, commit = index.layout, first.commit
    # Told otherwise about that commit, a new process believes it: it did not list the tree.
    told = {env: dict(found) for env, found in index.by_env.items()}
    told["dev"]["api"] = (digest_of("told"), "elsewhere")
    pins.save(kept, layout, pins.load(kept, layout), pins.Pins(commit, layout, told))
    assert cli_main(remote, work).pinned("api", "dev") == digest_of("told")
    # Main moves: the new main is read (its files, by blob id), and kept whole in turn.
    commit_by_hand(
        remote,
        tmp_path / "person",
        "pin web",
        lambda c: pin_digest(c, "dev", "web", digest_of("w")),
    )
    moved = cli_main(remote, work)
    assert moved.commit != commit
    assert moved.pinned("api", "dev") is None and moved.pinned("web", "dev") == digest_of("w")
    last = pins.load_pins(kept, layout, moved.commit)
    assert last is not None and last.by_env == moved._pins().by_env  # type: ignore[union-attr]
    assert pins.load_pins(kept, layout, commit) is None

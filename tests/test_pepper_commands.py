"""After `zivmilter rekey`: `status --keys` shows the previous key's carried access-code pepper
and how many hashes name it, and `zivmilter maintenance` prunes it once none has for a day,
saying so in one line; the recipient's code verifies throughout."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.harness.cli import zivmilter_in_process
from tests.harness.postfix import free_port
from zivmilter import crypto, defaults
from zivmilter.store import NewMessage, NewRecipient, SqliteStore

CODE = "tulip-7311"


def _config(tmp_path: Path, key: Path, previous: list[Path]) -> Path:
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "organization: {domains: [hospital.example]}\n"
        f"store: {{path: {tmp_path / 'store'}, key_file: {key},"
        f" previous_key_files: [{', '.join(str(p) for p in previous)}]}}\n"
        f"reinject: {{host: 127.0.0.1, port: {free_port()}, replies_port: {free_port()},"
        " timeout: 5}\n"
    )
    return cfg


def _status(cfg: Path) -> tuple[int, str, dict[str, object]]:
    text = zivmilter_in_process("status", "--keys", "--config", str(cfg))
    as_json = zivmilter_in_process("status", "--keys", "--json", "--config", str(cfg))
    assert text.returncode == as_json.returncode, (text, as_json)
    return text.returncode, text.stdout, json.loads(as_json.stdout)


def test_status_shows_the_carried_pepper_and_maintenance_prunes_it(tmp_path: Path) -> None:
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    crypto.keygen(str(old_key))
    crypto.keygen(str(new_key))
    old, new = crypto.load_kek(str(old_key)), crypto.load_kek(str(new_key))
    old_id = crypto.key_id(old).hex()
    store_dir = str(tmp_path / "store")
    st = SqliteStore.open(store_dir, old)
    rcpt = NewRecipient(
        "carol@example.com", 1, "access_right", "notification", "A3",
        verification="access_code", access_code=CODE,
    )  # fmt: skip
    saved = st.save_message(
        NewMessage("alice@hospital.example", "Lab", b"Subject: Lab\r\n\r\nx\r\n", [rcpt])
    )
    st.close()

    # The rotation (README "Key rotation"), then the old key retired.
    cfg = _config(tmp_path, new_key, [old_key])
    done = zivmilter_in_process(
        "rekey", "--config", str(cfg), "--new-key", str(new_key), "--pause", "0"
    )
    assert done.returncode == 0, done
    assert (
        f"carried access-code pepper of key {old_id}: 1 access-code hashes name it" in done.stdout
    )
    cfg = _config(tmp_path, new_key, [])
    code, text, status = _status(cfg)
    assert code == 0 and status["retirable"], text
    assert status["carried_peppers"] == [{"id": old_id, "hashes": 1}], status
    assert status["peppered_hashes_without_key_id"] == 0
    assert "nothing depends on a previous key: they can be removed" in text  # as before
    assert f"carried access-code pepper of key {old_id}: 1 access-code hashes name it" in text

    # Maintenance keeps it while carol's hash names it.
    run = zivmilter_in_process("maintenance", "--config", str(cfg))
    assert run.returncode == 0, run
    assert "pruned" not in run.stdout

    # Carol proves her code in the portal: her hash is made again under the new key.
    st = SqliteStore.open(store_dir, new)
    (carol,) = st.recipients(saved.id)
    assert carol.access_code_hash is not None
    renewed = st.prove_access_code(carol.id, carol.access_code_hash, CODE)
    assert renewed is not None and st.access_code_matches(renewed, CODE)
    st.close()
    _, text, status = _status(cfg)
    assert status["carried_peppers"] == [{"id": old_id, "hashes": 0}], status
    grace = defaults.PEPPER_PRUNE_GRACE // 3600
    assert f"no access-code hash names it (maintenance prunes it {grace} h after" in text

    # A run a day ago found it unused (the store's clock behind); this one prunes it.
    ago = SqliteStore.open(store_dir, new, now=lambda: time.time() - defaults.PEPPER_PRUNE_GRACE)
    assert ago.prune_peppers() == []
    ago.close()
    run = zivmilter_in_process("maintenance", "--config", str(cfg))
    assert run.returncode == 0, run
    line = f"access-code pepper of key {old_id} pruned: no stored access-code hash names it"
    assert run.stdout.count(line) == 1, run.stdout
    code, text, status = _status(cfg)
    assert code == 0 and status["carried_peppers"] == [], status
    assert "carried access-code pepper" not in text
    st = SqliteStore.open(store_dir, new)
    (carol,) = st.recipients(saved.id)
    assert carol.access_code_hash == renewed and st.access_code_matches(renewed, CODE)
    st.close()
    run = zivmilter_in_process("maintenance", "--config", str(cfg))
    assert "pruned" not in run.stdout  # once

"""team.yaml validation: every error class gives its exact message with field path and line."""

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botlab.cli import app
from botlab.teamfile import TeamFileError, load_team

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "team.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(TeamFileError) as caught:
        load_team(path)
    return [p.render("team.yaml") for p in caught.value.problems]


@pytest.mark.parametrize("name", ["demo-cpu.yaml", "azr-coder-7b.yaml"])
def test_shipped_team_files_are_valid(name):
    team = load_team(REPO / "teams" / name)
    assert team.name == name.removesuffix(".yaml")
    assert team.run_dir == (REPO / "runs" / team.name).resolve()


def test_demo_uses_builtin_model_and_auto_engine():
    team = load_team(REPO / "teams" / "demo-cpu.yaml")
    assert team.model.name == "builtin:smollm2-135m"
    assert team.model.engine == "auto"


def test_missing_field(tmp_path):
    path = write(tmp_path, """
        name: t
        notifiers:
          email:
            from_addr: bot@x.test
            to: [me@x.test]
    """)
    assert problems(path) == ["team.yaml:3: notifiers.email.smtp_host: required field is missing"]


def test_wrong_type(tmp_path):
    path = write(tmp_path, """
        name: t
        train:
          lr: fast
    """)
    assert problems(path) == [
        "team.yaml:3: train.lr: Input should be a valid number, unable to parse string as a number (got 'fast')"
    ]


def test_unknown_key_suggests_the_close_one(tmp_path):
    path = write(tmp_path, """
        name: t
        selfplay:
          refrences: 4
    """)
    assert problems(path) == ["team.yaml:3: selfplay.refrences: unknown key (did you mean 'references'?)"]


def test_unknown_key_without_close_match_lists_allowed(tmp_path):
    path = write(tmp_path, "name: t\nzzz: 1\n")
    [message] = problems(path)
    assert message.startswith("team.yaml:2: zzz: unknown key (allowed: name, goal, storage_dir, model,")


def test_bad_enum(tmp_path):
    path = write(tmp_path, """
        name: t
        model:
          engine: vlm
    """)
    assert problems(path) == [
        "team.yaml:3: model.engine: Input should be 'auto', 'vllm', 'transformers' or 'server' (got 'vlm')"
    ]


def test_inline_secret_is_refused(tmp_path):
    path = write(tmp_path, """
        name: t
        notifiers:
          nostr:
            nsec_env: nsec1qqqqqqqqqqqqqqqqqqqqqqqqqq
            relays: [ws://127.0.0.1:7777]
            recipients: [npub1sl69f7tkqru020fhwl73vkjjfv0nnr0g8djhrvzxjswuznyalzdqz6maaw]
    """)
    assert problems(path) == [
        "team.yaml:4: notifiers.nostr.nsec_env: must be the NAME of an environment variable (like "
        "BOTLAB_SMTP_PASSWORD), not 'nsec…'; secrets are never written in team.yaml"
    ]


def test_password_key_points_to_env_field(tmp_path):
    path = write(tmp_path, """
        name: t
        notifiers:
          email:
            from_addr: bot@x.test
            to: [me@x.test]
            smtp_host: localhost
            password: hunter2
    """)
    assert problems(path) == [
        "team.yaml:7: notifiers.email.password: unknown key "
        "(did you mean 'password_env'? secrets are given by environment-variable name)"
    ]


def test_every_error_is_reported_at_once(tmp_path):
    path = write(tmp_path, """
        name: t
        train: {lr: -1, stepz: 3}
        schedules:
          digest_every: often
    """)
    assert problems(path) == [
        "team.yaml:2: train.lr: Input should be greater than 0 (got -1)",
        "team.yaml:2: train.stepz: unknown key (did you mean 'steps'?)",
        "team.yaml:4: schedules.digest_every: 'often' is not a duration: use a number of seconds or e.g. "
        "'90s', '30m', '6h', '1d'",
    ]


def test_per_task_baseline_needs_several_answers_per_task(tmp_path):
    path = write(tmp_path, """
        name: t
        selfplay:
          solver_samples: 1
        train:
          solver_baseline: task
    """)
    [problem] = problems(path)
    assert "train.solver_baseline" in problem and "selfplay.solver_samples" in problem


def test_yaml_syntax_error_has_a_line(tmp_path):
    path = write(tmp_path, "name: t\nmodel: [unclosed\n")
    [message] = problems(path)
    assert message.startswith("team.yaml:3: not valid YAML:")


def test_missing_file(tmp_path):
    assert problems(tmp_path / "nope.yaml") == ["team.yaml: no such file"]


def test_cli_validate_exit_codes(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(REPO / "teams" / "demo-cpu.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output
    bad = write(tmp_path, "name: t\nmodel: {engine: vlm}\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "model.engine: Input should be 'auto', 'vllm', 'transformers' or 'server'" in " ".join(result.output.split())
    assert "Traceback" not in result.output


# --- notifier sections: every value that cannot work is an error naming its field ----------------------------------

NPUB = "npub1sl69f7tkqru020fhwl73vkjjfv0nnr0g8djhrvzxjswuznyalzdqz6maaw"
HEX_PUBKEY = "87f454f97600f8f53d3777fd165a524b1f398de83b6571b046941dc14c9df89a"
EMAIL = {"from_addr": "bot@botlab.test", "to": ["me@example.test"], "smtp_host": "127.0.0.1", "smtp_port": 2525,
         "smtp_security": "starttls", "imap_host": "127.0.0.1", "imap_port": 10993, "imap_security": "tls",
         "username_env": "BOTLAB_MAIL_USER", "password_env": "BOTLAB_MAIL_PASSWORD"}
NOSTR = {"nsec_env": "BOTLAB_NOSTR_NSEC", "relays": ["ws://127.0.0.1:7777"], "recipients": [NPUB]}


def notifier_team(tmp_path: Path, section: str, **changes) -> Path:
    import yaml

    settings = dict(EMAIL if section == "email" else NOSTR) | changes
    settings = {k: v for k, v in settings.items() if v is not None}
    path = tmp_path / "team.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "notifiers": {section: settings}}, sort_keys=False))
    return path


def test_valid_loopback_notifiers(tmp_path):
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    load_team(notifier_team(tmp_path, "email", ca_file="ca.pem"))
    load_team(notifier_team(tmp_path, "email", smtp_security="none", imap_security="none", imap_port=10143))
    load_team(notifier_team(tmp_path, "nostr", recipients=[HEX_PUBKEY], allowed_pubkeys=[],
                            relays=["ws://127.0.0.1:7777", "wss://relay.example.org"]))


@pytest.mark.parametrize(("section", "changes", "expected"), [
    ("email", {"from_addr": "not-an-address"},
     "notifiers.email.from_addr: 'not-an-address' is not an email address (like bot@example.org)"),
    ("email", {"from_addr": "Bot <bot@botlab.test>"},
     "notifiers.email.from_addr: 'Bot <bot@botlab.test>' is not an email address: write only the address"),
    ("email", {"to": ["me@example.test", "you at example.test"]},
     "notifiers.email.to.1: 'you at example.test' is not an email address"),
    ("email", {"allowed_senders": ["@example.test"]}, "notifiers.email.allowed_senders.0: '@example.test' is not an"),
    ("email", {"smtp_host": "smtp example.org"}, "notifiers.email.smtp_host: 'smtp example.org' is not a host name"),
    ("email", {"imap_host": "https://imap.example.org"}, "notifiers.email.imap_host: 'https://imap.example.org' is"),
    ("email", {"smtp_port": 0}, "notifiers.email.smtp_port: Input should be greater than or equal to 1 (got 0)"),
    ("email", {"imap_port": 70000}, "notifiers.email.imap_port: Input should be less than or equal to 65535"),
    ("email", {"smtp_port": 465, "smtp_security": "none"},
     "notifiers.email.smtp_security: port 465 speaks TLS from the first byte; use smtp_security: tls"),
    ("email", {"smtp_port": 465}, "notifiers.email.smtp_security: port 465 speaks TLS from the first byte"),
    ("email", {"smtp_port": 587, "smtp_security": "tls"},
     "notifiers.email.smtp_security: port 587 starts unencrypted, so tls cannot connect; use smtp_security: "
     "starttls or port 465"),
    ("email", {"imap_port": 143}, "notifiers.email.imap_security: port 143 starts unencrypted, so tls cannot "
                                  "connect; use imap_security: none or port 993"),
    ("email", {"imap_port": 993, "imap_security": "none"}, "notifiers.email.imap_security: port 993 speaks TLS"),
    ("email", {"smtp_host": "smtp.example.org", "smtp_security": "none"},
     "notifiers.email.smtp_security: none would send the password in clear text to smtp.example.org"),
    ("email", {"imap_host": "imap.example.org", "imap_security": "none", "imap_port": 10143},
     "notifiers.email.imap_security: none would send the password in clear text to imap.example.org"),
    ("email", {"password_env": None}, "notifiers.email.password_env: set both username_env and password_env"),
    ("email", {"username_env": None, "password_env": None},
     "notifiers.email.imap_host: reading replies needs username_env and password_env"),
    ("email", {"imap_host": None, "dkim_required": True},
     "notifiers.email.dkim_required: replies are only read with imap_host set"),
    ("email", {"imap_host": None, "allowed_senders": ["me@example.test"]},
     "notifiers.email.allowed_senders: replies are only read with imap_host set"),
    ("email", {"smtp_security": "none", "imap_security": "none", "imap_port": 10143, "ca_file": "ca.pem"},
     "notifiers.email.ca_file: no connection uses TLS"),
    ("email", {"ca_file": "missing/ca.pem"}, "notifiers.email.ca_file: "),
    ("email", {"to": ["me@example.test", "Me@Example.test"]}, "notifiers.email.to: 'Me@Example.test' is listed twice"),
    ("email", {"allowed_senders": ["me@example.test", "bot@botlab.test"]},
     "notifiers.email.allowed_senders: bot@botlab.test is the team's own address (from_addr)"),
    ("nostr", {"recipients": [NPUB, HEX_PUBKEY]},
     f"notifiers.nostr.recipients: '{HEX_PUBKEY}' is listed twice (as '{NPUB}')"),
    ("nostr", {"relays": ["ws://127.0.0.1:7777", "ws://127.0.0.1:7777"]},
     "notifiers.nostr.relays: 'ws://127.0.0.1:7777' is listed twice"),
    ("nostr", {"recipients": ["npub1abc"]},
     "notifiers.nostr.recipients.0: 'npub1abc' is not an npub or hex public key"),
    ("nostr", {"recipients": [NPUB[:-1] + ("q" if NPUB[-1] != "q" else "p")]},
     "notifiers.nostr.recipients.0: 'npub1sl69f7tkqru020f…' is not an npub or hex public key"),  # bad checksum
    ("nostr", {"allowed_pubkeys": [NPUB, "nsec1" + "q" * 58]},
     "notifiers.nostr.allowed_pubkeys.1: is a secret key (nsec); give the public key (npub) here"),
    ("nostr", {"relays": ["https://relay.example.org"]},
     "notifiers.nostr.relays.0: relay 'https://relay.example.org' must start with ws:// or wss://"),
    ("nostr", {"relays": ["ws://127.0.0.1:99999"]},
     "notifiers.nostr.relays.0: relay 'ws://127.0.0.1:99999' is not a valid URL"),
    ("nostr", {"relays": ["wss://"]}, "notifiers.nostr.relays.0: relay 'wss://' is not a valid URL"),
])
def test_bad_notifier_values_name_the_field(tmp_path, section, changes, expected):
    path = notifier_team(tmp_path, section, **changes)
    [message] = problems(path)
    assert expected in message
    assert message.startswith("team.yaml:") and message.split(":")[1].isdigit()  # with its line
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert expected.split(":")[0] in result.output.replace("\n", "") and "Traceback" not in result.output


def test_validate_checks_a_set_nsec(tmp_path, monkeypatch):
    from nostr_sdk import Keys

    path = notifier_team(tmp_path, "nostr")
    monkeypatch.setenv("BOTLAB_NOSTR_NSEC", "nsec1notakey")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "notifiers.nostr.nsec_env: environment variable BOTLAB_NOSTR_NSEC does not hold a valid nsec" in \
        result.output.replace("\n", " ").replace("  ", " ")
    monkeypatch.setenv("BOTLAB_NOSTR_NSEC", Keys.generate().secret_key().to_bech32())
    assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 0


def test_the_readme_notifier_example_is_valid(tmp_path):
    """README's loopback example of every notifier key is a valid team file."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Notifiers", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "team.yaml"
    path.write_text("name: t\n" + block)
    team = load_team(path)
    for section in (team.notifiers.email, team.notifiers.nostr):  # every key is shown
        fields = type(section).model_fields
        assert all(f"    {name}:" in block for name in fields), type(section)

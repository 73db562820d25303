"""MQTT users, passwords and the secured broker config of the compose deployment.

The broker of ``docker-compose.yml`` refuses anonymous clients and restricts every
user to its role with ``mosquitto/acl``.  One user per node (the user name is the
node id, so a node may publish its own status ``wattcast/v1/status/<user>``)::

    simulator                 publishes readings and end-of-stream markers
    predictor-<model>         reads readings and ends, publishes <model>'s forecasts
    collector                 reads everything, publishes metrics
    viewer                    reads forecasts, metrics and node status (outside subscribers)
    dashboard                 the web dashboard: reads readings, forecasts, metrics, status, progress
    homeassistant             reads discovery configs, readings, forecasts, node status

Passwords are never committed.  Each lives in an environment variable named by
:func:`password_env_var` (``WATTCAST_PASSWORD_PREDICTOR_LSTM`` ...), which docker
compose reads from the untracked file ``.env``; ``wattcast broker passwd``
(:func:`passwd_command`) creates that file with random passwords.  The compose
init step ``mosquitto/init-auth.sh`` turns the variables into the broker's password
file; :func:`write_password_file` does the same here for a local broker (mosquitto
2.0's PBKDF2-SHA512 format, no ``mosquitto_passwd`` needed).

:func:`secured_private_broker` runs the deployment's ``mosquitto/mosquitto.conf``
(authentication, ACL, persistence, shared settings) as a :class:`PrivateBroker`
on a free loopback port, for tests and local experiments.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from wattcast.assets import mosquitto_dir
from wattcast.contract import MODELS

MOSQUITTO_DIR = mosquitto_dir()
DEPLOYMENT_CONF = MOSQUITTO_DIR / "mosquitto.conf"
ACL_FILE = MOSQUITTO_DIR / "acl"

#: Where docker-compose.yml puts things inside the broker container.
CONTAINER_CONFIG_DIR = "/etc/wattcast/mosquitto"
CONTAINER_AUTH_DIR = "/mosquitto/auth"
CONTAINER_DATA_DIR = "/mosquitto/data"

#: MQTT user -> role (``Status.role`` of the node that logs in as that user).
USERS: dict[str, str] = {
    "simulator": "simulator",
    **{f"predictor-{m}": "predictor" for m in MODELS},
    "collector": "collector",
    "viewer": "viewer",
    "dashboard": "dashboard",
    "homeassistant": "homeassistant",
}
#: The users of a ``wattcast run`` private broker: the nodes' and viewer's, and ``runner``,
#: the run's own read-only watcher (statuses, metrics, progress; see mosquitto/acl).
RUN_USERS: dict[str, str] = {**USERS, "runner": "runner"}
ENV_PREFIX = "WATTCAST_PASSWORD_"
#: PBKDF2 iterations of mosquitto_passwd (mosquitto 2.0 ``$7$`` hashes).
PBKDF2_ITERATIONS = 101

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class CredentialsError(ValueError):
    """Missing or unusable credentials (one line, shown without traceback)."""


def password_env_var(user: str) -> str:
    """``predictor-lstm-augmented`` -> ``WATTCAST_PASSWORD_PREDICTOR_LSTM_AUGMENTED``."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", user).upper()


def generate_password(nbytes: int = 24) -> str:
    """A random password of URL-safe characters (no quoting needed in .env or a shell)."""
    return secrets.token_urlsafe(nbytes)


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The password-file hash of mosquitto 2.0 (``$7$``: PBKDF2-HMAC-SHA512, 12-byte salt)."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True if ``hashed`` (a ``$7$`` entry of a mosquitto password file) is ``password``'s."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    return hash_password(password, base64.b64decode(salt), int(iterations)) == hashed


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (atomically replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_password_file(path: str | Path, passwords: Mapping[str, str]) -> Path:
    """A mosquitto password file (mode 600) with ``user:hash`` for every entry of ``passwords``."""
    lines = []
    for user, password in passwords.items():
        if not user or ":" in user or not password:
            raise CredentialsError(f"bad user name or empty password for {user!r}")
        lines.append(f"{user}:{hash_password(password)}\n")
    path = Path(path)
    write_private(path, "".join(lines))
    return path


# ------------------------------------------------------------------------ .env files


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a docker compose ``.env`` file (comments and blanks skipped)."""
    values: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            continue
        key, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def passwords_from(env: Mapping[str, str], users: Iterable[str] = USERS) -> dict[str, str]:
    """The password of each of ``users`` from its variable in ``env``; CredentialsError names the missing."""
    passwords = {u: env.get(password_env_var(u), "") for u in users}
    missing = [password_env_var(u) for u, p in passwords.items() if not p]
    if missing:
        raise CredentialsError(f"no password in {', '.join(missing)} (create them: wattcast broker passwd)")
    return passwords


def ensure_passwords(
    existing: Mapping[str, str] | None = None, users: Iterable[str] = USERS, rotate: bool = False
) -> tuple[dict[str, str], list[str]]:
    """A password for every user: taken from ``existing`` (variables by name) unless ``rotate``, else random.

    Returns (user -> password, users whose password is new).
    """
    existing = existing or {}
    passwords, created = {}, []
    for user in users:
        current = "" if rotate else existing.get(password_env_var(user), "")
        if not current:
            current = generate_password()
            created.append(user)
        passwords[user] = current
    return passwords, created


def env_lines(passwords: Mapping[str, str]) -> list[str]:
    return [f"{password_env_var(u)}={p}" for u, p in passwords.items()]


def update_env_file(path: str | Path, passwords: Mapping[str, str]) -> Path:
    """Set the password variables in the ``.env`` file ``path`` (mode 600), keeping its other lines."""
    path = Path(path)
    ours = {password_env_var(u): p for u, p in passwords.items()}
    wanted = dict(ours)
    out: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            m = _ENV_LINE.match(line)
            if m and not line.lstrip().startswith("#") and m.group(1) in ours:
                if m.group(1) in wanted:  # else a duplicate of a key already written: dropped
                    out.append(f"{m.group(1)}={wanted.pop(m.group(1))}")
                continue
            out.append(line)
    else:
        out.append("# MQTT passwords of the wattcast compose deployment (wattcast broker passwd). Never commit.")
    out.extend(f"{k}={v}" for k, v in wanted.items())
    write_private(path, "\n".join(out) + "\n")
    return path


# --------------------------------------------------------------- a secured local broker


def deployment_conf(
    auth_dir: str | Path, config_dir: str | Path = MOSQUITTO_DIR, conf_path: str | Path = DEPLOYMENT_CONF
) -> str:
    """The lines of the deployment's mosquitto.conf for a :class:`PrivateBroker` (``extra_conf``).

    Container paths are mapped to local ones (``/mosquitto/auth`` -> ``auth_dir``,
    ``/etc/wattcast/mosquitto`` -> ``config_dir``); ``listener`` and
    ``persistence_location`` are left out: the PrivateBroker sets those (a free
    loopback port, its working directory).
    """
    mapping = [(CONTAINER_AUTH_DIR, str(Path(auth_dir).resolve())), (CONTAINER_CONFIG_DIR, str(Path(config_dir).resolve()))]
    lines = []
    for line in Path(conf_path).read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or words[0] in ("listener", "persistence_location"):
            continue
        for container, local in mapping:
            line = line.replace(container, local)
        lines.append(line)
    return "\n".join(lines) + "\n"


def predictor_acl(model: str) -> str:
    """The ACL lines of the predictor of a model that is not built in (as mosquitto/acl has for the built-in ones)."""
    user = f"predictor-{model}"
    return (
        f"\n# --- {model}: a model of this deployment's own (declared, not built in)\n"
        f"user {user}\ntopic read wattcast/v1/+/reading\ntopic read wattcast/v1/+/end\n"
        f"topic write wattcast/v1/+/forecast/{model}\ntopic readwrite wattcast/v1/status/{user}\n"
    )


def prepare_auth_dir(
    auth_dir: str | Path, passwords: Mapping[str, str], acl: str | Path = ACL_FILE, models: Iterable[str] = ()
) -> Path:
    """What the compose init step makes, in Python: ``auth_dir/passwd`` and ``auth_dir/acl`` (mode 600),
    the ACL with the predictors of ``models`` that are not built in."""
    auth_dir = Path(auth_dir)
    write_password_file(auth_dir / "passwd", passwords)
    extra = "".join(predictor_acl(m) for m in models if m not in MODELS)
    write_private(auth_dir / "acl", Path(acl).read_text() + extra)
    (auth_dir / "listeners").mkdir(exist_ok=True)  # mosquitto.conf includes it (init-auth.sh: a TLS listener)
    return auth_dir


def secured_private_broker(auth_dir: str | Path, passwords: Mapping[str, str] | None = None, **kwargs):
    """A :class:`PrivateBroker` (not started) running the deployment's config on a free loopback port.

    With ``passwords`` the password file and ACL are written to ``auth_dir`` first (``models=``: the
    ACL also lets the predictors of these models that are not built in in);
    without, ``auth_dir`` must already hold them (e.g. made by mosquitto/init-auth.sh).
    ``kwargs`` go to PrivateBroker (``workdir`` is also where the database goes).
    """
    from wattcast.broker import PrivateBroker

    models = kwargs.pop("models", ())
    if passwords is not None:
        prepare_auth_dir(auth_dir, passwords, models=models)
    return PrivateBroker(common=False, anonymous=False, extra_conf=deployment_conf(auth_dir), **kwargs)


# --------------------------------------------------------------------------------- CLI


def add_passwd_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``wattcast broker passwd``."""
    p.add_argument(
        "--env-file",
        default=".env",
        help="the .env file docker compose reads: missing passwords are added as random ones, "
        "present ones kept ('-' prints the variables instead; default %(default)s)",
    )
    p.add_argument(
        "--password-file",
        default=None,
        metavar="PATH",
        help="also write a mosquitto password file for these users (for a broker outside compose)",
    )
    p.add_argument("--rotate", action="store_true", help="replace every password with a new random one")
    add_users_arg(p, "users to cover")


def add_users_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--users``: some of the deployment's MQTT users (default: all)."""
    p.add_argument(
        "--users",
        nargs="+",
        default=list(USERS),
        type=deployment_user,
        metavar="USER",
        help=f"{what} (default: all of {', '.join(USERS)}; predictor-<model> for a model of your own)",
    )


def deployment_user(value: str) -> str:
    """A user of the deployment: a built-in one, or the predictor of a model of your own."""
    from wattcast.contract import model_name

    if value in USERS:
        return value
    if value.startswith("predictor-"):
        try:
            model_name(value[len("predictor-") :])
            return value
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(
        f"not a user of the deployment: {value!r} (known: {', '.join(USERS)}, predictor-<model>)"
    )


def passwd_command(args: argparse.Namespace) -> int:
    """``wattcast broker passwd``: create (or complete) the MQTT passwords of the deployment.

    A password is taken from, in order: its environment variable
    (``WATTCAST_PASSWORD_<USER>``), the env file, else a new random one.  Passwords
    are never printed, except with ``--env-file -``.
    """
    to_stdout = args.env_file == "-"
    existing: dict[str, str] = {}
    if not to_stdout and Path(args.env_file).exists():
        existing.update(read_env_file(args.env_file))
    existing.update({k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX) and v})
    passwords, created = ensure_passwords(existing, args.users, rotate=args.rotate)
    if to_stdout:
        print("\n".join(env_lines(passwords)))
    else:
        update_env_file(args.env_file, passwords)
        kept = [u for u in passwords if u not in created]
        print(
            f"{args.env_file}: new password for {', '.join(created) or 'nobody'}"
            + (f"; kept {', '.join(kept)}" if kept else ""),
            file=sys.stderr,
        )
    if args.password_file:
        write_password_file(args.password_file, passwords)
        print(f"{args.password_file}: mosquitto password file for {', '.join(passwords)}", file=sys.stderr)
    return 0

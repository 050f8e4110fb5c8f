"""Container entrypoint: one image, two roles, configured through environment variables.

    docker run brokerlab controller [extra flags]        # or BROKERLAB_ROLE=controller
    docker run brokerlab broker [extra flags]            # or BROKERLAB_ROLE=broker
    docker run brokerlab brokerlab --bootstrap broker-1:9092 topic list   # any other command runs as is

The environment becomes the flags of the process contract (python -m controller / python -m node);
flags given on the command line come last, so they win over the environment:

    both         BROKERLAB_LISTEN (controller 0.0.0.0:9090, broker 0.0.0.0:9092),
                 BROKERLAB_DATA_DIR (/var/lib/brokerlab/data), BROKERLAB_CONFIG_FILE,
                 BROKERLAB_CONFIG ("key=value key=value ...", whitespace or commas between pairs)
                 BROKERLAB_FAULT_INJECTION (1/true: --fault-injection, the experiments' TEST FACILITY)
    controller   BROKERLAB_NODE_ID (0), BROKERLAB_SEED
    broker       BROKERLAB_BROKER_ID, BROKERLAB_CONTROLLER (required), BROKERLAB_ADVERTISED_LISTENER,
                 BROKERLAB_RACK, BROKERLAB_EXTERNAL_LISTENER, BROKERLAB_ADVERTISED_EXTERNAL_LISTENER,
                 BROKERLAB_EXTERNAL_CONTROLLER

The main replaces this process (exec), so it runs as PID 1 and gets docker's SIGTERM directly.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping

ROLES = ("controller", "broker")
DEFAULT_DATA_DIR = "/var/lib/brokerlab/data"
DEFAULT_LISTEN = {"controller": "0.0.0.0:9090", "broker": "0.0.0.0:9092"}

# environment variable -> flag, per role (empty values are left out)
_FLAGS = {
    "controller": [("BROKERLAB_NODE_ID", "--node-id"), ("BROKERLAB_SEED", "--seed")],
    "broker": [
        ("BROKERLAB_BROKER_ID", "--broker-id"),
        ("BROKERLAB_CONTROLLER", "--controller"),
        ("BROKERLAB_ADVERTISED_LISTENER", "--advertised-listener"),
        ("BROKERLAB_RACK", "--rack"),
        ("BROKERLAB_EXTERNAL_LISTENER", "--external-listener"),
        ("BROKERLAB_ADVERTISED_EXTERNAL_LISTENER", "--advertised-external-listener"),
        ("BROKERLAB_EXTERNAL_CONTROLLER", "--external-controller"),
    ],
}
_REQUIRED = {"controller": [], "broker": ["BROKERLAB_BROKER_ID", "BROKERLAB_CONTROLLER"]}


class UsageError(Exception):
    pass


def command_for(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The command to exec for these arguments and this environment."""
    role = env.get("BROKERLAB_ROLE", "").strip()
    extra = list(argv)
    if extra and extra[0] in ROLES:
        role, extra = extra[0], extra[1:]
    elif extra and not extra[0].startswith("-"):
        return extra  # a command of its own: brokerlab, sh, python ...
    if role not in ROLES:
        raise UsageError(f"set BROKERLAB_ROLE to controller or broker (or pass it as the first argument), got {role!r}")
    given = {flag.split("=", 1)[0] for flag in extra if flag.startswith("--")}
    missing = [name for name in _REQUIRED[role]
               if not env.get(name, "").strip() and _flag_of(role, name) not in given]
    if missing:
        raise UsageError(f"the {role} needs {', '.join(missing)}")

    module = "controller" if role == "controller" else "node"
    command = [sys.executable, "-m", module,
               "--listen", env.get("BROKERLAB_LISTEN", "").strip() or DEFAULT_LISTEN[role],
               "--data-dir", env.get("BROKERLAB_DATA_DIR", "").strip() or DEFAULT_DATA_DIR]
    for name, flag in _FLAGS[role]:
        value = env.get(name, "").strip()
        if value:
            command += [flag, value]
    if env.get("BROKERLAB_CONFIG_FILE", "").strip():
        command += ["--config-file", env["BROKERLAB_CONFIG_FILE"].strip()]
    for pair in re.split(r"[\s,]+", env.get("BROKERLAB_CONFIG", "").strip()):
        if pair:
            if "=" not in pair:
                raise UsageError(f"BROKERLAB_CONFIG expects key=value pairs, got {pair!r}")
            command += ["--config", pair]
    if env.get("BROKERLAB_FAULT_INJECTION", "").strip().lower() in ("1", "true", "yes"):
        command.append("--fault-injection")
    return command + extra


def _flag_of(role: str, name: str) -> str:
    return dict(_FLAGS[role])[name]


def main(argv: list[str] | None = None) -> int:
    try:
        command = command_for(sys.argv[1:] if argv is None else argv, os.environ)
    except UsageError as exc:
        sys.stderr.write(f"entrypoint: error: {exc}\n")
        return 2
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"entrypoint: error: cannot run {command[0]}: {exc.strerror}\n")
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

"""The ``stsc`` entry point: compose the Hydra config, validate it once, run the selected stages.

Imports nothing heavy at module level: ``stsc --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

log = logging.getLogger("stsc")


def _install_redaction(secrets: list[str]) -> None:
    from stsc.tracking import RedactingFilter

    flt = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)


def _hydra_files(output_dir: Path) -> dict[str, str]:
    hydra_dir = output_dir / ".hydra"
    if not hydra_dir.is_dir():
        return {}
    return {f".hydra/{p.name}": p.read_text() for p in sorted(hydra_dir.glob("*.yaml"))}


def load_plugins(modules: list[str]) -> None:
    """Import ``plugins=[...]`` modules (they may register extra stages); raises ``ConfigError``
    naming a module that cannot be found."""
    import importlib

    from stsc.errors import ConfigError

    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise  # the plugin exists; something it imports is missing
            raise ConfigError(
                f"plugins=[{name}]: no module {e.name!r} on the Python path (PYTHONPATH or an installed "
                "package); give the dotted module name, e.g. plugins=[my_pkg.stages]"
            ) from None


def _sweep_dir() -> Path | None:
    """The sweep's folder when this job is part of a ``-m`` sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


def _parent_run_id() -> str | None:
    """The sweep run id when this job is part of a ``-m`` sweep."""
    from stsc.tracking import read_sweep_run_id

    sweep_dir = _sweep_dir()
    return read_sweep_run_id(sweep_dir) if sweep_dir is not None else None


def _job_overrides() -> list[str]:
    """This job's command-line overrides (in a sweep: its own values of the swept keys)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def _job(dict_cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from stsc.config import to_root_config
    from stsc.errors import StscError
    from stsc.tracking import config_secret_values

    secrets = config_secret_values(OmegaConf.to_container(dict_cfg, resolve=False))
    _install_redaction(secrets)
    try:
        cfg = to_root_config(dict_cfg)
        load_plugins(cfg.plugins)
    except StscError as e:
        log.error("%s", e)
        sys.exit(2)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.dry_run:
            from stsc.plan import format_plan, make_plan

            print(format_plan(make_plan(cfg, sweep_dir=_sweep_dir())))
            return
        _run(cfg, OmegaConf.to_yaml(dict_cfg, resolve=True), output_dir, secrets)
    except Exception as e:  # Hydra prints the traceback: its messages must hold no secret
        from stsc.tracking import known_secrets, redact_exception

        redact_exception(e, known_secrets(secrets))
        raise


def _run(cfg: Any, resolved_yaml: str, output_dir: Path, secrets: list[str]) -> None:
    from stsc.errors import StscError
    from stsc.pipeline import run_pipeline

    tracker = None
    status = "FAILED"
    try:
        if cfg.tracking.enabled:
            from dataclasses import asdict

            from stsc.tracking import JobTracker

            tracker = JobTracker(cfg.tracking, cfg.root_path, extra_secrets=secrets)
            name = cfg.label or output_dir.name
            tags = {"output_dir": str(output_dir)}
            tracker.start(
                name, asdict(cfg), parent_run_id=_parent_run_id(), tags=tags, overrides=_job_overrides()
            )
            tracker.log_config_files({"resolved_config.yaml": resolved_yaml, **_hydra_files(output_dir)})
        outcomes = run_pipeline(cfg, tracker, sweep_dir=_sweep_dir())
        status = "FINISHED"
    except StscError as e:
        log.error("%s", e)
        sys.exit(2)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            tracker.end(status)
    _print_summary(cfg, outcomes, tracker)


def _print_summary(cfg: Any, outcomes: list, tracker: Any) -> None:
    from stsc.report import format_outcomes

    print(format_outcomes(outcomes))
    if tracker is not None:
        from stsc.tracking import redact_url_credentials

        print(
            f"\nMLflow: run {tracker.run_id} in experiment '{cfg.tracking.experiment}' "
            f"({redact_url_credentials(tracker.client.tracking_uri)}). "
            "Browse with `make ui` -> http://127.0.0.1:5000"
        )


def main() -> None:
    import hydra

    from stsc.config import register_configs
    from stsc.interrupts import EXIT_CODE, Terminated, note_interrupted, stop_on_sigterm

    register_configs(light=any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:]))
    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(_job)
    stop_on_sigterm()
    try:
        app()
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as Terminated
        note_interrupted()
        if not isinstance(e, Terminated):
            raise
        log.error("stopped by SIGTERM; finished items are kept, rerun the same command to resume")
        sys.exit(EXIT_CODE)


if __name__ == "__main__":
    main()

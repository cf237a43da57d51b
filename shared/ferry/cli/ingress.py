"""ferry ingress: the webhook receiver (docs/ingress.md)."""

from __future__ import annotations

from ferry.cli.app import app, fail, load_settings


@app.command()
def ingress() -> None:
    """Receive signed forge and CI webhooks (POST /webhooks/github|gitlab|gitea|ci on
    FERRY_INGRESS_HOST:FERRY_INGRESS_PORT), publish them as Ferry's events once per delivery, and
    reconcile what webhooks missed."""
    from ferry.runtime.ingress import run_ingress

    settings = load_settings()
    if settings.ingress_reconcile_s and settings.ingress_reconcile_s < 10:
        fail(
            f"FERRY_INGRESS_RECONCILE_S={settings.ingress_reconcile_s:g} is too often for the "
            "forge budget: give at least 10 seconds, or 0 to turn the reconcile pass off"
        )
    run_ingress(settings)

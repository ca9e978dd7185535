"""``taskcast token create|inspect``: access tokens (JWTs) for a hub with auth."""

from __future__ import annotations

import json
from pathlib import Path

import click

from taskcast.auth import DEFAULT_MAX_TOKEN_TTL, AuthError, create_token
from taskcast.channels import InvalidChannel
from taskcast.cli.options import hs256_secret, parse_duration, verifier_from


@click.group()
def token() -> None:
    """Create and inspect access tokens (JWTs)."""


@token.command("create")
@click.option("--publish", multiple=True, help="Channel pattern it may publish to (repeat).")
@click.option("--subscribe", multiple=True, help="Channel pattern it may subscribe to (repeat).")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 30m, 12h, 7d, seconds.")
@click.option("--admin", is_flag=True, help="May do everything.")
@click.option("--metrics", is_flag=True, help="May read /metrics and the detailed /healthz.")
@click.option(
    "--control",
    multiple=True,
    help="Channel pattern it may send task commands to, e.g. 'control.>' (repeat).",
)
@click.option("--sub", "subject", default="taskcast-client", show_default=True, help="Who.")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--private-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM private key for RS256/ES256.",
)
@click.option("--algorithm", type=click.Choice(["HS256", "RS256", "ES256"]))
def token_create(
    publish: tuple[str, ...],
    subscribe: tuple[str, ...],
    ttl: str,
    admin: bool,
    metrics: bool,
    control: tuple[str, ...],
    subject: str,
    secret_file: Path | None,
    private_key_file: Path | None,
    algorithm: str | None,
) -> None:
    """Print a signed token (HS256 with TASKCAST_SECRET unless a key file is given)."""
    if private_key_file is not None:
        key: str | bytes = private_key_file.read_bytes()
        algorithm = algorithm or "RS256"
    else:
        secret = hs256_secret(secret_file)
        if not secret:
            raise click.UsageError(
                "set TASKCAST_SECRET, or pass --secret-file or --private-key-file"
            )
        key, algorithm = secret, algorithm or "HS256"
    lifetime = parse_duration(ttl)
    if lifetime > DEFAULT_MAX_TOKEN_TTL:
        click.echo(
            f"warning: hubs refuse tokens that live longer than --max-token-ttl "
            f"(default {DEFAULT_MAX_TOKEN_TTL // 86400}d) unless started with a higher one",
            err=True,
        )
    try:
        click.echo(
            create_token(
                key,
                subject=subject,
                publish=list(publish),
                subscribe=list(subscribe),
                ttl_seconds=lifetime,
                admin=admin,
                metrics=metrics,
                control=list(control),
                algorithm=algorithm,
            )
        )
    except (InvalidChannel, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@token.command("inspect")
@click.argument("value")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--algorithm", type=click.Choice(["HS256", "RS256", "ES256"]))
def token_inspect(
    value: str, secret_file: Path | None, public_key_file: Path | None, algorithm: str | None
) -> None:
    """Show a token's claims, and whether it verifies with the configured key."""
    import jwt

    try:
        header = jwt.get_unverified_header(value)
        claims = jwt.decode(value, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise click.ClickException(f"not a token: {type(exc).__name__}") from exc
    click.echo(json.dumps({"header": header, "claims": claims}, indent=2))
    verifier = verifier_from(secret_file, public_key_file, algorithm)
    if verifier is None:
        click.echo("signature not checked (no secret or public key given)")
        return
    try:
        principal = verifier.verify(value)
    except AuthError as exc:
        raise click.ClickException(f"does not verify: {exc}") from exc
    click.echo(f"valid for {principal.subject}")

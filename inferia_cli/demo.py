"""`inferia demo` (what `make run` runs): a platform to try on one machine, with a demo organisation, two keys
and a deployment that the worker provisions on simulated nodes (the simulator adapter), like any other.

Keys are stored hashed, so to print them again on the next run their plaintext is kept in a 0600 file under
the data directory. That is for this demo only: real keys are shown once, at creation.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferia_cli.processes import DEMO_MODEL, Endpoints

if TYPE_CHECKING:  # the apps load only once Django is set up
    from apps.audit.actors import Actor
    from apps.orgs.models import Organization

DEMO_ORG_SLUG = "demo"
DEMO_ADMIN_EMAIL = "admin@inferia.local"
ADMIN_PASSWORD_FILE = "demo-admin-password"  # noqa: S105 - a file name, not a password
KEYS_FILE = "demo-keys.json"
SIM_MODEL_ID = "inferia/sim-model"
SIM_EMBED_MODEL_ID = "inferia/sim-embed"
DEMO_STORE_NAME = "Inferia handbook"
DEMO_HANDBOOK = Path(__file__).with_name("demo_data") / "handbook.md"
DEMO_PRICE_INPUT_PER_MTOK_MICROS = 150_000  # $0.15 per 1M input tokens
DEMO_PRICE_OUTPUT_PER_MTOK_MICROS = 600_000  # $0.60 per 1M output tokens
# label in the keys file -> (key name, scopes)
DEMO_KEYS: dict[str, tuple[str, list[str]]] = {
    "inference": ("Demo inference key", ["inference"]),
    "manage": ("Demo management key", ["manage", "read"]),
}


@dataclass(frozen=True)
class DemoAdmin:
    """The login printed by the demo; `password` is None when it came from the environment and is not ours to show."""

    email: str
    password: str | None


@dataclass(frozen=True)
class DemoData:
    """What the demo prints: its organisation, the plaintext of its keys by label, and its deployment."""

    organization: Any
    keys: dict[str, str]
    deployment: Any
    embedding_deployment: Any


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, never readable by others even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # in case the file existed with wider rights


def demo_admin_prepare(*, data_dir: Path) -> DemoAdmin:
    """The superadmin `inferia init` will create: INFERIA_SUPERADMIN_* when set, else admin@inferia.local with a
    password generated once and kept under the data dir. Exports them for `platform_init` and the children."""
    path = data_dir / ADMIN_PASSWORD_FILE
    saved = path.read_text().strip() if path.exists() else None
    email, password = os.environ.get("INFERIA_SUPERADMIN_EMAIL"), os.environ.get("INFERIA_SUPERADMIN_PASSWORD")
    if email and password and (email, password) != (DEMO_ADMIN_EMAIL, saved):
        return DemoAdmin(email=email, password=None)  # the operator's own, set in the environment
    if saved is None:
        saved = secrets.token_urlsafe(12)
        write_private(path, saved)
    password = saved
    os.environ["INFERIA_SUPERADMIN_EMAIL"] = DEMO_ADMIN_EMAIL
    os.environ["INFERIA_SUPERADMIN_PASSWORD"] = password
    return DemoAdmin(email=DEMO_ADMIN_EMAIL, password=password)


def _read_keys_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def demo_keys_ensure(*, organization: Organization, actor: Actor, data_dir: Path) -> dict[str, str]:
    """The demo keys' plaintext by label: the saved ones while they still authenticate, new ones otherwise."""
    from apps.keys.models import ApiKey
    from apps.keys.services import api_key_create, hash_key

    path = data_dir / KEYS_FILE
    saved = _read_keys_file(path)
    result: dict[str, str] = {}
    changed = False
    for label, (name, scopes) in DEMO_KEYS.items():
        entry = saved.get(label) or {}
        secret = str(entry.get("secret", ""))
        key = ApiKey.objects.filter(organization=organization, secret_hash=hash_key(secret)).first() if secret else None
        if key is None or not key.is_usable():
            issued = api_key_create(organization=organization, name=name, scopes=scopes, actor=actor)
            secret, changed = issued.secret, True
            saved[label] = {"id": issued.key.pk, "name": name, "scopes": scopes, "secret": secret}
        result[label] = secret
    if changed:
        write_private(path, json.dumps(saved, indent=2) + "\n")
    return result


def demo_ensure(*, data_dir: Path, admin_email: str) -> DemoData:
    """Create what the demo needs, once: the demo organisation (owned by the superadmin), its keys and a
    deployment served by simulated nodes. Needs Django set up and `platform_init` done."""
    from django.conf import settings

    from apps.audit.services import AuditContext
    from apps.compute.services import simulator_deployment_ensure
    from apps.orgs.bootstrap_services import membership_ensure, organization_ensure
    from apps.orgs.models import User
    from apps.rbac.models import Role
    from inferia_cli.bootstrap import CLI_CONTEXT_AGENT

    context = AuditContext(user_agent=CLI_CONTEXT_AGENT)
    admin = User.objects.get(email__iexact=admin_email)
    organization, _ = organization_ensure(slug=DEMO_ORG_SLUG, name="Demo", actor=admin, context=context)
    owner_role = Role.objects.get(organization=None, slug="owner")
    membership_ensure(user=admin, organization=organization, role=owner_role, actor=admin, context=context)
    keys = demo_keys_ensure(organization=organization, actor=admin, data_dir=data_dir)
    deployment, _ = simulator_deployment_ensure(
        organization=organization,
        served_model_name=DEMO_MODEL,
        model_id=SIM_MODEL_ID,
        actor=admin,
        context=context,
        # A small hosted model's list prices, so that the demo's usage and dashboard show spend from the first request.
        price_input_per_mtok_micros=DEMO_PRICE_INPUT_PER_MTOK_MICROS,
        price_output_per_mtok_micros=DEMO_PRICE_OUTPUT_PER_MTOK_MICROS,
    )
    embedding_deployment, _ = simulator_deployment_ensure(
        organization=organization,
        served_model_name=settings.INFERIA_KNOWLEDGE_EMBEDDING_MODEL,
        model_id=SIM_EMBED_MODEL_ID,
        actor=admin,
        context=context,
    )
    return DemoData(
        organization=organization, keys=keys, deployment=deployment, embedding_deployment=embedding_deployment
    )


def demo_store_ensure(*, organization: Organization, admin_email: str) -> str:
    """The demo's sample vector store (the handbook, embedded by the worker once it is attached), created once when
    the embedding deployment serves; its id. Needs the gateway (this process's, in-process) to reach the model."""
    from django.conf import settings

    from apps.audit.services import AuditContext
    from apps.knowledge.models import VectorStore
    from apps.knowledge.services import knowledge_file_create, vector_store_create_probed
    from apps.orgs.models import User
    from inferia_cli.bootstrap import CLI_CONTEXT_AGENT

    existing = VectorStore.objects.filter(organization=organization, name=DEMO_STORE_NAME).first()
    if existing is not None:
        return str(existing.public_id)
    context = AuditContext(user_agent=CLI_CONTEXT_AGENT)
    admin = User.objects.get(email__iexact=admin_email)
    with DEMO_HANDBOOK.open("rb") as handle:
        file = knowledge_file_create(
            organization=organization,
            handle=handle,
            filename=DEMO_HANDBOOK.name,
            purpose="assistants",
            content_type="text/markdown",
            actor=admin,
            context=context,
        )
    store = vector_store_create_probed(
        organization=organization,
        embedding_model=settings.INFERIA_KNOWLEDGE_EMBEDDING_MODEL,
        actor=admin,
        name=DEMO_STORE_NAME,
        chunk_max_tokens=100,
        chunk_overlap_tokens=20,
        file_ids=[file.public_id],
        context=context,
    )
    return str(store.public_id)


def _knowledge_example(base: str, key: str, model: str, store_id: str) -> str:
    if not store_id:
        return ""
    return f"""
 Knowledge base:    {store_id}  ("{DEMO_STORE_NAME}": the worker embeds it in a few seconds)

python - <<'EOF'
from openai import OpenAI

client = OpenAI(base_url="{base}/v1", api_key="{key}")
for hit in client.vector_stores.search("{store_id}", query="When does support answer?", max_num_results=2):
    print(round(hit.score, 3), hit.filename, hit.content[0].text[:80])
answer = client.chat.completions.create(
    model="{model}",
    messages=[{{"role": "user", "content": "When does support answer?"}}],
    extra_body={{"retrieval": {{"vector_store_ids": ["{store_id}"], "max_num_results": 2}}}},
)
print(answer.model_extra["retrieval"])
EOF
"""


def demo_banner(
    *,
    endpoints: Endpoints,
    admin: DemoAdmin,
    demo: DemoData,
    data_dir: Path,
    embedded: bool,
    nodes: list[str],
    store_id: str = "",
) -> str:
    """The text printed once everything answers: where to go, how to sign in, the keys, and two examples."""
    base = endpoints.web_url
    key = demo.keys["inference"]
    model = demo.deployment.served_model_name
    password = admin.password or "(the one in INFERIA_SUPERADMIN_PASSWORD)"
    storage = f"embedded PostgreSQL + Redis under {data_dir}" if embedded else "PostgreSQL and Redis from the URLs set"
    return f"""
======================================================================================
 Inferia is running ({storage})

 Console:           {base}/console/   (platform staff: {base}/admin/)
 Admin login:       {admin.email} / {password}
 Inference key:     {key}
                    (scope: inference; for /v1 calls, and for Ollama clients at {base}/ollama)
 Management key:    {demo.keys["manage"]}
                    (scopes: manage, read; for the CLI and the REST API)
 Model:             {model}  (served by {len(nodes)} simulated replica(s) the worker provisioned: {", ".join(nodes)})

 Try it with curl:

curl -N {base}/v1/chat/completions \\
  -H "Authorization: Bearer {key}" \\
  -H "Content-Type: application/json" \\
  -d '{{"model": "{model}", "stream": true, "messages": [{{"role": "user", "content": "Hello!"}}]}}'

 Or with the openai Python package:

python - <<'EOF'
from openai import OpenAI

client = OpenAI(base_url="{base}/v1", api_key="{key}")
stream = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}], stream=True
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
EOF
{_knowledge_example(base, key, model, store_id)}
 Press Ctrl-C to stop. `make run` again reuses the data.
======================================================================================
"""

"""Usage's models, moved from the audit app: the tables, their rows, indexes and constraints stay where they are
(`audit_usage...`, kept by `db_table`), so this migration changes the project's state only, not the database.
Audit 0010 removes the models from the audit app's state in step.

The content types of the four models move to this app too, so that their permissions (`view_usagerecord`, ...) keep
their ids, and every role that holds them keeps them (now as `usage.view_usagerecord`).
"""

import django.db.models.deletion
from django.db import migrations, models

MODELS = ("usagerecord", "usagerollup", "usagemodelrollup", "usagekeyrollup")


def _content_types_move(apps, from_label: str, to_label: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        if not ContentType.objects.filter(app_label=to_label, model=model).exists():
            ContentType.objects.filter(app_label=from_label, model=model).update(app_label=to_label)


def content_types_to_usage(apps, schema_editor):
    _content_types_move(apps, "audit", "usage")


def content_types_to_audit(apps, schema_editor):
    _content_types_move(apps, "usage", "audit")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("audit", "0009_usage_client_request_id"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("compute", "0004_crash_loop_backoff"),
        ("keys", "0003_key_end_recorded"),
        ("orgs", "0003_invitation_teams"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="UsageKeyRollup",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("requests", models.BigIntegerField(default=0)),
                        ("errors", models.BigIntegerField(default=0)),
                        ("prompt_tokens", models.BigIntegerField(default=0)),
                        ("completion_tokens", models.BigIntegerField(default=0)),
                        ("cost_micros", models.BigIntegerField(default=0)),
                        ("day", models.DateTimeField(help_text="Start of the day (UTC).")),
                        (
                            "api_key",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                db_index=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="keys.apikey",
                            ),
                        ),
                        (
                            "organization",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                db_index=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.organization",
                            ),
                        ),
                        (
                            "team",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                db_index=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.team",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "audit_usagekeyrollup",
                        "ordering": ["-day"],
                        "indexes": [
                            models.Index(
                                fields=["organization", "day"],
                                include=(
                                    "api_key",
                                    "team",
                                    "requests",
                                    "errors",
                                    "prompt_tokens",
                                    "completion_tokens",
                                    "cost_micros",
                                ),
                                name="audit_usage_key_rollup_org",
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("day", "organization", "team", "api_key"),
                                name="audit_usage_key_rollup_unique",
                                nulls_distinct=False,
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="UsageModelRollup",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("requests", models.BigIntegerField(default=0)),
                        ("errors", models.BigIntegerField(default=0)),
                        ("prompt_tokens", models.BigIntegerField(default=0)),
                        ("completion_tokens", models.BigIntegerField(default=0)),
                        ("cost_micros", models.BigIntegerField(default=0)),
                        ("latency_ms_total", models.FloatField(default=0)),
                        ("ttft_ms_total", models.FloatField(default=0)),
                        ("hour", models.DateTimeField(help_text="Start of the hour (UTC).")),
                        ("model", models.CharField(max_length=200)),
                        (
                            "organization",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                db_index=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.organization",
                            ),
                        ),
                        (
                            "team",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                db_index=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.team",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "audit_usagemodelrollup",
                        "ordering": ["-hour"],
                        "indexes": [models.Index(fields=["organization", "hour"], name="audit_usage_model_rollup_org")],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("hour", "organization", "team", "model"),
                                name="audit_usage_model_rollup_unique",
                                nulls_distinct=False,
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="UsageRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("request_id", models.CharField(max_length=64, unique=True)),
                        ("client_request_id", models.CharField(blank=True, db_default="", default="", max_length=128)),
                        ("started_at", models.DateTimeField()),
                        (
                            "endpoint",
                            models.CharField(help_text="chat.completions, completions, embeddings, ...", max_length=32),
                        ),
                        ("model", models.CharField(max_length=200)),
                        ("prompt_tokens", models.PositiveIntegerField(default=0)),
                        ("completion_tokens", models.PositiveIntegerField(default=0)),
                        ("cost_micros", models.BigIntegerField(default=0)),
                        ("ttft_ms", models.FloatField(blank=True, null=True)),
                        ("latency_ms", models.FloatField(default=0)),
                        ("status_code", models.PositiveSmallIntegerField()),
                        (
                            "outcome",
                            models.CharField(
                                choices=[
                                    ("ok", "Completed"),
                                    ("error", "Error"),
                                    ("cancelled", "Client disconnected"),
                                    ("denied", "Denied by policy"),
                                ],
                                max_length=16,
                            ),
                        ),
                        ("error_code", models.CharField(blank=True, max_length=64)),
                        (
                            "estimated",
                            models.BooleanField(
                                default=False, help_text="Tokens counted from the stream, not the engine."
                            ),
                        ),
                        ("streamed", models.BooleanField(default=False)),
                        ("guardrails", models.JSONField(blank=True, default=list)),
                        (
                            "api_key",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="keys.apikey",
                            ),
                        ),
                        (
                            "deployment",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="compute.modeldeployment",
                            ),
                        ),
                        (
                            "organization",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.organization",
                            ),
                        ),
                        (
                            "replica",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="compute.replica",
                            ),
                        ),
                        (
                            "team",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.team",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "audit_usagerecord",
                        "ordering": ["-started_at"],
                        "indexes": [
                            models.Index(fields=["organization", "-started_at"], name="audit_usage_organiz_4e714a_idx"),
                            models.Index(fields=["api_key", "-started_at"], name="audit_usage_api_key_3dc7fc_idx"),
                            models.Index(fields=["model", "-started_at"], name="audit_usage_model_9973c2_idx"),
                            models.Index(
                                condition=models.Q(("client_request_id", ""), _negated=True),
                                fields=["organization", "client_request_id"],
                                name="audit_usage_client_request_id",
                            ),
                            models.Index(
                                condition=models.Q(("guardrails", []), _negated=True),
                                fields=["organization", "-started_at"],
                                include=("guardrails",),
                                name="audit_usage_guardrails_cover",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="UsageRollup",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("requests", models.BigIntegerField(default=0)),
                        ("errors", models.BigIntegerField(default=0)),
                        ("prompt_tokens", models.BigIntegerField(default=0)),
                        ("completion_tokens", models.BigIntegerField(default=0)),
                        ("cost_micros", models.BigIntegerField(default=0)),
                        ("latency_ms_total", models.FloatField(default=0)),
                        ("ttft_ms_total", models.FloatField(default=0)),
                        ("hour", models.DateTimeField(help_text="Start of the hour (UTC).")),
                        ("model", models.CharField(max_length=200)),
                        (
                            "api_key",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="keys.apikey",
                            ),
                        ),
                        (
                            "organization",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.organization",
                            ),
                        ),
                        (
                            "team",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                null=True,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="orgs.team",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "audit_usagerollup",
                        "ordering": ["-hour"],
                        "indexes": [
                            models.Index(
                                fields=["organization", "hour"],
                                include=(
                                    "api_key",
                                    "requests",
                                    "errors",
                                    "prompt_tokens",
                                    "completion_tokens",
                                    "cost_micros",
                                ),
                                name="audit_usage_rollup_org_hour",
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("hour", "organization", "team", "api_key", "model"),
                                name="audit_usage_rollup_unique",
                                nulls_distinct=False,
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_usage, reverse_code=content_types_to_audit),
    ]

"""The usage models now belong to the usage app (usage 0001): they leave the audit app's state. Their tables stay,
under the names they have (`audit_usage...`), so nothing changes in the database."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0009_usage_client_request_id"),
        ("usage", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="usagemodelrollup",
                    name="organization",
                ),
                migrations.RemoveField(
                    model_name="usagemodelrollup",
                    name="team",
                ),
                migrations.RemoveField(
                    model_name="usagerecord",
                    name="api_key",
                ),
                migrations.RemoveField(
                    model_name="usagerecord",
                    name="deployment",
                ),
                migrations.RemoveField(
                    model_name="usagerecord",
                    name="organization",
                ),
                migrations.RemoveField(
                    model_name="usagerecord",
                    name="replica",
                ),
                migrations.RemoveField(
                    model_name="usagerecord",
                    name="team",
                ),
                migrations.RemoveField(
                    model_name="usagerollup",
                    name="api_key",
                ),
                migrations.RemoveField(
                    model_name="usagerollup",
                    name="organization",
                ),
                migrations.RemoveField(
                    model_name="usagerollup",
                    name="team",
                ),
                migrations.DeleteModel(
                    name="UsageKeyRollup",
                ),
                migrations.DeleteModel(
                    name="UsageModelRollup",
                ),
                migrations.DeleteModel(
                    name="UsageRecord",
                ),
                migrations.DeleteModel(
                    name="UsageRollup",
                ),
            ],
            database_operations=[],
        ),
    ]

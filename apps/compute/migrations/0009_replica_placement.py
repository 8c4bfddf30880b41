"""Replicas record the pool they run on (until now always their deployment's), and deployments may name other
pools to place replicas on."""

import django.db.models.deletion
from django.db import migrations, models


def replicas_on_their_deployments_pool(apps, schema_editor):
    Replica = apps.get_model("compute", "Replica")
    ModelDeployment = apps.get_model("compute", "ModelDeployment")
    for deployment_id, pool_id in ModelDeployment.objects.values_list("pk", "pool_id"):
        Replica.objects.filter(deployment_id=deployment_id).update(pool_id=pool_id)


class Migration(migrations.Migration):
    dependencies = [
        ("compute", "0008_deployment_rollouts"),
    ]

    operations = [
        migrations.AddField(
            model_name="modeldeployment",
            name="placement_pools",
            field=models.ManyToManyField(
                blank=True,
                help_text="Other pools its replicas may run on: each new replica goes to the cheapest pool with "
                "room (apps/compute/placement.py).",
                related_name="placed_deployments",
                to="compute.computepool",
            ),
        ),
        migrations.AddField(
            model_name="replica",
            name="pools_refused",
            field=models.JSONField(
                blank=True, default=list, help_text="Ids of the pools whose provider refused to provision it."
            ),
        ),
        migrations.AddField(
            model_name="replica",
            name="pool",
            field=models.ForeignKey(
                null=True,
                help_text="The pool it runs on: its deployment's, or one of its placement pools.",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="replicas",
                to="compute.computepool",
            ),
        ),
        migrations.RunPython(replicas_on_their_deployments_pool, migrations.RunPython.noop),
    ]

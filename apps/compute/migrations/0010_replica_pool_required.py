"""Every replica now names its pool (0009 filled it in); a separate migration, so that the rows 0009 updated have
no pending foreign-key checks when the column changes."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("compute", "0009_replica_placement"),
    ]

    operations = [
        migrations.AlterField(
            model_name="replica",
            name="pool",
            field=models.ForeignKey(
                help_text="The pool it runs on: its deployment's, or one of its placement pools.",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="replicas",
                to="compute.computepool",
            ),
        ),
    ]

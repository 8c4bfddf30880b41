from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0002_store_keys_purpose")]

    operations = [
        migrations.AddField(
            model_name="vectorstore",
            name="reembed_claimed_until",
            field=models.DateTimeField(
                blank=True,
                help_text="The re-embedding worker's lease: past it, another worker may take over.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="vectorstore",
            name="reembed_error",
            field=models.CharField(
                blank=True,
                help_text="Why the last change of embedding model failed (the old one serves).",
                max_length=1000,
            ),
        ),
    ]

# Nested pg_stat_statements rows (toplevel), sampler failures, where replica lag comes from.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('console', '0001_initial'),
        ('monitors', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='SamplerHealth',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('sampler', models.CharField(choices=[('fast', 'Activity, connections and replication sampler'), ('statements', 'pg_stat_statements sampler'), ('heartbeat', 'Heartbeat writer')], max_length=16)),
                ('last_success_at', models.DateTimeField(null=True)),
                ('last_failure_at', models.DateTimeField(null=True)),
                ('failing_since', models.DateTimeField(null=True)),
                ('consecutive_failures', models.IntegerField(default=0)),
                ('failures_total', models.BigIntegerField(default=0)),
                ('last_error', models.TextField(blank=True)),
            ],
            options={
                'ordering': ['sampler'],
            },
        ),
        migrations.RemoveConstraint(
            model_name='statementcounter',
            name='statement_counter_unique',
        ),
        migrations.AddField(
            model_name='statementcounter',
            name='toplevel',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='statementdelta',
            name='toplevel',
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name='targetstate',
            name='replica_lag_source',
            field=models.CharField(blank=True, choices=[('standbys', "this primary's pg_stat_replication"), ('primary', "the primary's pg_stat_replication"), ('replica', "this replica's own view (heartbeat)"), ('', 'unknown')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='statementcounter',
            constraint=models.UniqueConstraint(fields=('target', 'queryid', 'dbid', 'userid', 'toplevel'), name='statement_counter_unique'),
        ),
        migrations.AddField(
            model_name='samplerhealth',
            name='target',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='sampler_health', to='console.target'),
        ),
        migrations.AddConstraint(
            model_name='samplerhealth',
            constraint=models.UniqueConstraint(fields=('target', 'sampler'), name='sampler_health_unique'),
        ),
    ]

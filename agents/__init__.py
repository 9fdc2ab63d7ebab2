"""Everything that runs the loop: data, rollout, training, evaluation, reports and the CLI."""

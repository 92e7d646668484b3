"""What is read back from runs for people: HTML reports, figures, audit findings."""

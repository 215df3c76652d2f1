"""Teachers: whatever writes reasoning traces for the pool's questions (docs/design.md,
"Run directory")."""

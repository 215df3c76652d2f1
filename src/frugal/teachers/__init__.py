"""Teachers: whatever writes reasoning traces for the pool's questions (DESIGN.md section 2)."""

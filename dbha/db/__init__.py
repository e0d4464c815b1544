"""Database drivers: one per engine, all behind ``dbha.db.base.DatabaseDriver``."""

"""The database (SQLAlchemy 2 models, Alembic migrations) and the content-addressed file store."""

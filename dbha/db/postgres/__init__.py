"""The PostgreSQL driver (psycopg 3): driver, connection, rejoin."""

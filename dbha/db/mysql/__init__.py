"""The MySQL / MariaDB driver (PyMySQL): driver, connection, rejoin, tools."""

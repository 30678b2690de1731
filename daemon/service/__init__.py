"""The always-on service `sottovoced`: controller, devices, D-Bus, systemd glue."""

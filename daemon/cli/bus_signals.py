"""Signals a CLI connection follows: the assistant's PropertiesChanged and the bus's
NameOwnerChanged for the assistant's name; for each, the match rule that asks the bus for it
and the test that picks it out of the messages a handler sees."""

from __future__ import annotations

from typing import Any

from dbus_fast import Message, MessageType

from daemon.cli.bus_calls import PROPERTIES_IFACE
from daemon.service.dbus_service import BUS_NAME, OBJECT_PATH

PROPERTIES_CHANGED_RULE = (f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',"
                           f"interface='{PROPERTIES_IFACE}',member='PropertiesChanged'")


OWNER_CHANGED_RULE = ("type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                      f"arg0='{BUS_NAME}'")


def owner_changed(msg: Message) -> str | None:
    """The assistant's new bus owner ("" when it left) when ``msg`` is NameOwnerChanged for
    its name; None for any other message."""
    if (msg.message_type == MessageType.SIGNAL and msg.member == "NameOwnerChanged"
            and msg.body[:1] == [BUS_NAME]):
        return str(msg.body[2])
    return None


def properties_changed(msg: Message) -> dict[str, Any] | None:
    """The changed properties (name: Variant) when ``msg`` is the assistant's
    PropertiesChanged signal; None for any other message."""
    if (msg.message_type == MessageType.SIGNAL and msg.member == "PropertiesChanged"
            and msg.path == OBJECT_PATH and len(msg.body) > 1):
        return msg.body[1]
    return None

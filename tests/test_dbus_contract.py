"""The XML in dbus/ is the contract: documented everywhere, and exactly what the running
service exports. Also the activation file and the README's busctl examples."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from daemon.service.dbus_service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.dbus_client import Client, run_async
from tests.fixtures_dbus import ServiceProcess

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "dbus" / "org.sottovoce.Assistant1.xml"
DOC = "org.freedesktop.DBus.DocString"


def _contract() -> ET.Element:
    iface = ET.parse(CONTRACT).getroot().find(f"interface[@name='{INTERFACE}']")
    assert iface is not None, f"{CONTRACT} lacks interface {INTERFACE}"
    return iface


def _shape(iface: ET.Element) -> dict[str, Any]:
    """Members, argument names/types/directions and property access, comparable."""
    def args(el: ET.Element, default_dir: str) -> list[tuple[str, str, str]]:
        return [(a.get("name", ""), a.get("type", ""), a.get("direction", default_dir))
                for a in el.findall("arg")]

    return {
        "methods": {m.get("name"): args(m, "in") for m in iface.findall("method")},
        "signals": {s.get("name"): args(s, "out") for s in iface.findall("signal")},
        "properties": {p.get("name"): (p.get("type"), p.get("access"))
                       for p in iface.findall("property")},
    }


def _doc(el: ET.Element) -> str:
    ann = el.find(f"annotation[@name='{DOC}']")
    return "" if ann is None else ann.get("value", "").strip()


def test_contract_has_what_the_issue_asks() -> None:
    shape = _shape(_contract())
    assert shape["methods"] == {
        "Pause": [], "Resume": [], "Interrupt": [],
        "SetEmotion": [("name", "s", "in"), ("intensity", "d", "in")],
        "Ask": [("text", "s", "in"), ("reply", "s", "out"), ("sources", "as", "out")],
        "Say": [("text", "s", "in")], "Reindex": [], "Reload": [],
    }
    assert shape["properties"] == {
        "State": ("s", "read"), "Paused": ("b", "read"), "Emotion": ("(sd)", "read"),
        "LastTranscript": ("s", "read"), "LastReply": ("s", "read"), "LastTimings": ("a{sd}", "read"),
        "KnowledgeBase": ("a{sv}", "read"), "Models": ("a{ss}", "read"), "Version": ("s", "read"),
        "Problems": ("a{ss}", "read"),
    }
    assert {name: [t for _, t, _ in a] for name, a in shape["signals"].items()} == {
        "StateChanged": ["s"], "Transcript": ["s"], "Reply": ["s", "as"], "Interrupted": ["s"],
        "Error": ["s", "s"], "IndexUpdated": ["u", "u"],
    }


def test_every_member_and_argument_is_documented() -> None:
    iface = _contract()
    undocumented = [
        f"{el.tag} {el.get('name')}"
        for el in [iface, *iface.findall("method"), *iface.findall("signal"),
                   *iface.findall("property"), *iface.findall("*/arg")]
        if len(_doc(el)) < 10
    ]
    assert not undocumented, f"missing {DOC}: {undocumented}"


def test_running_service_exports_exactly_the_contract(sottovoced: ServiceProcess) -> None:
    async def introspect() -> str:
        client = await Client.connect(sottovoced.bus.address)
        try:
            (xml,) = await client.call("Introspect",
                                       interface="org.freedesktop.DBus.Introspectable")
            return xml
        finally:
            client.close()

    node = ET.fromstring(run_async(introspect))
    exported = node.find(f"interface[@name='{INTERFACE}']")
    assert exported is not None, "the service does not export " + INTERFACE
    assert _shape(exported) == _shape(_contract())


def test_property_values_have_the_contract_types(sottovoced: ServiceProcess) -> None:
    declared = _shape(_contract())["properties"]

    async def signatures() -> dict[str, str]:
        client = await Client.connect(sottovoced.bus.address)
        try:
            (props,) = await client.call("GetAll", "s", [INTERFACE],
                                         interface="org.freedesktop.DBus.Properties")
            return {name: variant.signature for name, variant in props.items()}
        finally:
            client.close()

    assert run_async(signatures) == {name: sig for name, (sig, _) in declared.items()}


def test_activation_file_names_the_service() -> None:
    text = (ROOT / "dbus" / "org.sottovoce.Assistant.service").read_text()
    fields = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert [ln for ln in text.splitlines() if ln.startswith("[")] == ["[D-BUS Service]"]
    assert fields["Name"] == BUS_NAME
    assert fields["SystemdService"] == "sottovoce.service"
    assert fields["Exec"].split()[0].endswith("/sottovoced")


@pytest.mark.parametrize("kind", ["method", "property", "signal"])
def test_docs_show_busctl_for_every_member(kind: str) -> None:
    """The README's D-Bus section has a busctl example for each member."""
    readme = (ROOT / "README.md").read_text()
    doc = readme[readme.index("## D-Bus API"):readme.index("## Tray icon")]
    examples = [ln for ln in doc.splitlines() if ln.startswith("busctl --user")]
    names = [el.get("name", "") for el in _contract().findall(kind)]
    patterns = {
        "method": lambda n: rf"\bcall \$A {n}\b",
        "property": lambda n: rf"\bget-property \$A {n}\b",
        "signal": lambda n: rf"member='{n}'",
    }
    missing = [n for n in names if not any(re.search(patterns[kind](n), ln) for ln in examples)]
    assert not missing, f"README.md's D-Bus API lacks a busctl example for {kind}s {missing}"
    assert f"{BUS_NAME} {OBJECT_PATH} {INTERFACE}" in doc

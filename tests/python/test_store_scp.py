"""The storage SCP that receives C-MOVE sub-operations takes them only from the site a move is
asked of (its AE title and host): C-STOREs injected into it during a real C-MOVE from dcmqrscp,
under another AE title or from another address, never reach the client (docs/ACCESS.md)."""

import copy
import io

import pydicom
import requests
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from conftest import start_gateway, stop

INJECTED_NAME = "INJECTED^INTRUDER"
# A destination no session-wide gateway of the other tests holds.
DESTINATION = "FEDGW5"


def injected_instance(ct):
    """A small CT instance of the study being retrieved, under a name and UID of its own."""
    instance = pydicom.dcmread(ct["files"][0])
    instance.PatientName = INJECTED_NAME
    instance.SOPInstanceUID = generate_uid()
    instance.file_meta.MediaStorageSOPInstanceUID = instance.SOPInstanceUID
    instance.Rows = instance.Columns = 8
    instance.PixelData = b"\0" * (8 * 8 * 2)
    return instance


def inject(port, calling_ae, bind_host, instance, originator_ae, originator_ids):
    """Opens an association to the storage SCP as `calling_ae` from `bind_host` and sends
    `instance` once per Move Originator Message ID (the gateway numbers its messages from 1),
    naming `originator_ae` as the move's originator.
    Returns whether the association was accepted and the statuses of the C-STOREs."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage, [instance.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title=DESTINATION, bind_address=(bind_host, 0))
    if not assoc.is_established:
        return False, []
    statuses = []
    for originator_id in originator_ids:
        if not assoc.is_established:
            break
        status = assoc.send_c_store(copy.deepcopy(instance), originator_aet=originator_ae, originator_id=originator_id)
        statuses.append(status.Status if status else None)
    assoc.release()
    return True, statuses


def echo_accepted(port, calling_ae):
    """True when the storage SCP accepts an association from `calling_ae` on 127.0.0.1 (it does
    only while a move from that AE title and host is in flight)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=DESTINATION)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def read_rest(chunks):
    """The rest of a streamed body, and whether it ended cleanly (a retrieval failing part-way
    drops the connection instead)."""
    rest = []
    try:
        for chunk in chunks:
            rest.append(chunk)
    except requests.exceptions.RequestException:
        return b"".join(rest), False
    return b"".join(rest), True


def multipart_instances(body, content_type):
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    for part in body.split(b"--" + boundary)[1:-1]:
        yield pydicom.dcmread(io.BytesIO(part.partition(b"\r\n\r\n")[2][:-2]))


def test_an_injected_c_store_never_reaches_the_client(testbed):
    ct = testbed["data"]["ct"]
    port = next(d["port"] for d in testbed["move_destinations"] if d["ae_title"] == DESTINATION)
    dcmqrscp_ae = next(s["ae_title"] for s in testbed["sites"] if s["id"] == "dcmqrscp")
    instance = injected_instance(ct)
    process, gw = start_gateway(testbed, "dcmqrscp", "c-move", DESTINATION)
    try:
        response = requests.get(
            f"{gw.url}/studies/{ct['study_uid']}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
            stream=True,
            timeout=120,
        )
        assert response.status_code == 200, response.text
        # The first instances have arrived (2 MiB of a 105 MB study); from here the client reads
        # nothing while the C-STOREs are injected, so the gateway holds the C-MOVE back and it
        # stays in flight.
        chunks = response.iter_content(1 << 16)
        head = b""
        while len(head) < 2 << 20:
            head += next(chunks)
        in_flight_before = echo_accepted(port, dcmqrscp_ae)
        # Another AE title from the site's host, claiming to be sub-operations of the first moves.
        other_ae = inject(port, "INTRUDER", "127.0.0.1", instance, DESTINATION, range(1, 33))
        # The site's AE title from another address (loopback 127.0.0.2 is not the site's host).
        other_host = inject(port, dcmqrscp_ae, "127.0.0.2", instance, DESTINATION, range(1, 33))
        in_flight_after = echo_accepted(port, dcmqrscp_ae)
        rest, complete = read_rest(chunks)
        body = head + rest
    finally:
        stop(process)

    assert INJECTED_NAME.encode() not in body
    assert complete, "the retrieval failed part-way"
    received = list(multipart_instances(body, response.headers["Content-Type"]))
    assert all(str(i.PatientName) != INJECTED_NAME for i in received)
    assert instance.SOPInstanceUID not in {i.SOPInstanceUID for i in received}
    assert sorted(i.SOPInstanceUID for i in received) == sorted(ct["instance_uids"])
    # The injections happened while the move was in flight: the site itself was admitted before
    # and after them, and each injection was refused at the association.
    assert in_flight_before and in_flight_after
    assert other_ae == (False, []), other_ae
    assert other_host == (False, []), other_host


def test_nothing_is_admitted_without_a_move_in_flight(testbed):
    port = next(d["port"] for d in testbed["move_destinations"] if d["ae_title"] == DESTINATION)
    dcmqrscp_ae = next(s["ae_title"] for s in testbed["sites"] if s["id"] == "dcmqrscp")
    process, _ = start_gateway(testbed, "dcmqrscp", "c-move", DESTINATION)
    try:
        assert not echo_accepted(port, dcmqrscp_ae)
    finally:
        stop(process)

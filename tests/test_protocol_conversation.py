"""Control-conversation state machines: ServerConversation and ClientConversation."""

from __future__ import annotations

import pytest

from ftpkit.protocol import (
    Answer,
    BadLine,
    ClientConversation,
    Command,
    CommandError,
    LineTooLong,
    MalformedReply,
    Reply,
    ServerConversation,
    StateError,
)
from ftpkit.protocol.conversation import TRANSFER_COMMANDS, Phase, bad_line_text

READY = Reply(220, ("ftpkit ready",))


def server(data: bytes = b"") -> ServerConversation:
    """A greeted server that has received ``data``."""
    conv = ServerConversation()
    conv.greet(READY)
    conv.receive_data(data)
    return conv


def transferring(verb: str = "RETR", arg: str = "big.iso") -> tuple[ServerConversation, Command]:
    """A server in the middle of a transfer: the command is taken and has had its 150."""
    conv = server(f"{verb} {arg}\r\n".encode())
    command = conv.next_event()
    conv.reply(Reply(150, ("Opening data connection.",)))
    return conv, command


# --- ServerConversation: greeting --------------------------------------------------------------------------


def test_greeting_comes_first():
    conv = ServerConversation()
    conv.receive_data(b"USER bob\r\n")
    assert conv.phase is Phase.GREETING
    assert conv.next_event() is None  # the 220 has not gone out yet
    assert conv.waiting == 1
    assert conv.greet(READY) == b"220 ftpkit ready\r\n"
    assert conv.phase is Phase.READY
    assert conv.next_event() == Command("USER", "bob")


def test_no_reply_before_the_greeting():
    conv = ServerConversation()
    with pytest.raises(StateError):
        conv.reply(Reply(200))


def test_greeting_only_once():
    conv = server()
    with pytest.raises(StateError):
        conv.greet(READY)


@pytest.mark.parametrize("code", [200, 230, 500])
def test_greeting_code_must_be_220_120_or_421(code):
    with pytest.raises(StateError):
        ServerConversation().greet(Reply(code))


def test_120_then_220_greeting():
    conv = ServerConversation()
    assert conv.greet(Reply(120, ("Ready in 5 minutes.",))) == b"120 Ready in 5 minutes.\r\n"
    assert conv.phase is Phase.GREETING
    conv.greet(READY)
    assert conv.phase is Phase.READY


def test_421_greeting_closes():
    conv = ServerConversation()
    conv.receive_data(b"USER bob\r\n")
    conv.greet(Reply(421, ("Too many users.",)))
    assert conv.phase is Phase.CLOSED
    assert conv.next_event() is None
    with pytest.raises(StateError):
        conv.reply(Reply(331))


# --- ServerConversation: ordering --------------------------------------------------------------------------


def test_commands_are_answered_in_order():
    conv = server(b"USER bob\r\nPASS secret\r\nSYST\r\n")
    assert conv.waiting == 3
    user = conv.next_event()
    assert user == Command("USER", "bob")
    assert conv.next_event() is None  # PASS waits for USER's final reply
    assert conv.reply(Reply(331, ("Password required.",))) == b"331 Password required.\r\n"
    assert conv.next_event() == Command("PASS", "secret")
    conv.reply(Reply(230))
    assert conv.next_event() == Command("SYST")
    conv.reply(Reply(215, ("UNIX Type: L8",)))
    assert conv.next_event() is None
    assert conv.waiting == 0


def test_a_long_pipeline_is_taken_in_order_across_reads():
    # 3000 commands in one read, more arriving halfway: every one comes out once, in order, and the count of
    # those waiting stays right across the inbox's compaction
    conv = server(b"".join(f"SIZE f{i}\r\n".encode() for i in range(3000)))
    seen: list[str] = []
    for i in range(4000):
        if i == 1500:
            conv.receive_data(b"".join(f"SIZE f{n}\r\n".encode() for n in range(3000, 4000)))
        assert conv.waiting == (3000 if i < 1500 else 4000) - i
        event = conv.next_event()
        assert isinstance(event, Command)
        seen.append(event.arg)
        conv.reply(Reply(213, ("1",)))
    assert seen == [f"f{i}" for i in range(4000)]
    assert conv.next_event() is None and conv.waiting == 0


def test_discard_pending_drops_what_was_not_taken():
    conv = server(b"NOOP\r\nPWD\r\nSYST\r\nHEL")
    assert conv.next_event() == Command("NOOP")
    assert conv.discard_pending() == 3  # PWD, SYST and the partial line
    conv.reply(Reply(200))
    assert conv.next_event() is None and conv.waiting == 0
    conv.receive_data(b"FEAT\r\n")
    assert conv.next_event() == Command("FEAT")


def test_second_command_arriving_while_the_first_is_open_waits():
    conv = server(b"CWD /pub\r\n")
    cwd = conv.next_event()
    conv.receive_data(b"PWD\r\n")
    assert conv.next_event() is None
    assert conv.waiting == 1
    conv.reply(Reply(250), to=cwd)
    assert conv.next_event() == Command("PWD")


def test_partial_command_is_not_an_event_yet():
    conv = server(b"NO")
    assert conv.next_event() is None
    assert conv.waiting == 0
    conv.receive_data(b"OP\r\n")
    assert conv.next_event() == Command("NOOP")


def test_reply_with_nothing_open_is_a_state_error():
    conv = server()
    with pytest.raises(StateError):
        conv.reply(Reply(200))
    conv.receive_data(b"NOOP\r\n")
    conv.next_event()
    conv.reply(Reply(200))
    with pytest.raises(StateError):
        conv.reply(Reply(200))  # NOOP has had its reply


def test_reply_to_a_command_that_is_not_open_is_a_state_error():
    conv = server(b"NOOP\r\n")
    conv.next_event()
    with pytest.raises(StateError):
        conv.reply(Reply(200), to=Command("NOOP"))  # equal, but not the command taken


def test_bad_lines_are_events_that_need_a_reply():
    conv = ServerConversation(max_line=16)
    conv.greet(READY)
    conv.receive_data(b"\r\n" + b"STOR " + b"x" * 40 + b"\r\nNOOP\r\n")
    empty = conv.next_event()
    assert isinstance(empty, BadLine)
    assert bad_line_text(empty) == "Syntax error: empty command line."
    assert conv.next_event() is None
    conv.reply(Reply(500, (bad_line_text(empty),)))
    too_long = conv.next_event()
    assert too_long == LineTooLong(16)
    assert bad_line_text(too_long) == "Command line too long (limit 16 bytes)."
    conv.reply(Reply(500))
    assert conv.next_event() == Command("NOOP")


# --- ServerConversation: transfers -------------------------------------------------------------------------


@pytest.mark.parametrize("verb", sorted(TRANSFER_COMMANDS))
def test_transfer_commands_may_get_a_preliminary_reply(verb):
    conv, command = transferring(verb, "x")
    assert conv.transfer is command
    conv.reply(Reply(226))
    assert conv.transfer is None


def test_other_commands_wait_until_the_transfer_ends():
    conv, retr = transferring()
    conv.receive_data(b"NOOP\r\nPWD\r\n")
    assert conv.next_event() is None
    assert conv.transfer == retr
    assert conv.reply(Reply(226, ("Transfer complete.",))) == b"226 Transfer complete.\r\n"
    assert conv.next_event() == Command("NOOP")


def test_stat_is_taken_during_a_transfer():
    conv, retr = transferring()
    conv.receive_data(b"STAT\r\n")
    stat = conv.next_event()
    assert stat == Command("STAT")
    conv.reply(Reply(213, ("Status: 42% done",)))  # by default to the command taken last: STAT
    assert conv.transfer is retr
    conv.reply(Reply(226), to=retr)
    assert conv.transfer is None


def test_abor_sequence_426_to_the_transfer_then_226_to_abor():
    conv, retr = transferring()
    conv.receive_data(b"\xff\xf4\xff\xf2ABOR\r\nPWD\r\n")
    abor = conv.next_event()
    assert abor == Command("ABOR")
    assert conv.next_event() is None  # PWD waits; one ABOR/STAT at a time
    assert conv.reply(Reply(426, ("Transfer aborted.",)), to=retr) == b"426 Transfer aborted.\r\n"
    assert conv.transfer is None
    assert conv.next_event() is None  # ABOR itself is still open
    assert conv.reply(Reply(226, ("ABOR successful.",))) == b"226 ABOR successful.\r\n"
    assert conv.next_event() == Command("PWD")


def test_only_one_command_alongside_a_transfer():
    conv, _ = transferring()
    conv.receive_data(b"STAT\r\nABOR\r\n")
    assert conv.next_event() == Command("STAT")
    assert conv.next_event() is None  # ABOR waits for STAT's reply
    conv.reply(Reply(213))
    assert conv.next_event() == Command("ABOR")


def test_preliminary_reply_to_a_non_transfer_command_is_a_state_error():
    conv = server(b"CWD /pub\r\n")
    conv.next_event()
    with pytest.raises(StateError):
        conv.reply(Reply(150))


def test_preliminary_reply_to_stat_during_a_transfer_is_a_state_error():
    conv, _ = transferring()
    conv.receive_data(b"STAT\r\n")
    conv.next_event()
    with pytest.raises(StateError):
        conv.reply(Reply(150))


def test_second_preliminary_reply_is_a_state_error():
    conv, _ = transferring()
    with pytest.raises(StateError):
        conv.reply(Reply(125))


# --- ServerConversation: closing ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [221, 421])
def test_221_and_421_close_the_conversation(code):
    conv = server(b"QUIT\r\nNOOP\r\n")
    conv.next_event()
    conv.reply(Reply(code))
    assert conv.phase is Phase.CLOSED
    assert conv.next_event() is None
    conv.receive_data(b"USER again\r\n")
    assert conv.waiting == 1  # only the NOOP received before: nothing is read after closing
    with pytest.raises(StateError):
        conv.reply(Reply(200))


def test_notice_421_closes():
    conv = server(b"NOOP\r\n")
    assert conv.notice(Reply(421, ("Idle timeout.",))) == b"421 Idle timeout.\r\n"
    assert conv.phase is Phase.CLOSED
    assert conv.next_event() is None
    with pytest.raises(StateError):
        conv.notice(Reply(421))


def test_notice_must_be_421():
    with pytest.raises(StateError):
        server().notice(Reply(220))


# --- ClientConversation ------------------------------------------------------------------------------------


def test_greeting_pairs_with_none():
    client = ClientConversation()
    assert client.receive_data(b"220 ready\r\n") == [Answer(None, Reply(220, ("ready",)))]
    assert client.greeted


def test_120_then_220_greeting_pairs_with_none():
    client = ClientConversation()
    assert client.receive_data(b"120 wait\r\n") == [Answer(None, Reply(120, ("wait",)))]
    assert not client.greeted
    assert client.receive_data(b"220 ready\r\n") == [Answer(None, Reply(220, ("ready",)))]
    assert client.greeted


def test_greeting_with_a_command_already_sent():
    client = ClientConversation()
    user = Command("USER", "bob")
    client.send(user)
    assert client.receive_data(b"120 wait\r\n220 ready\r\n331 pw\r\n") == [
        Answer(None, Reply(120, ("wait",))),
        Answer(None, Reply(220, ("ready",))),
        Answer(user, Reply(331, ("pw",))),
    ]


def test_pipelined_commands_pair_in_order():
    client = ClientConversation()
    client.receive_data(b"220 ready\r\n")
    user, password, syst = Command("USER", "bob"), Command("PASS", "x"), Command("SYST")
    wire = b"".join(client.send(c) for c in (user, password, syst))
    assert wire == b"USER bob\r\nPASS x\r\nSYST\r\n"
    assert client.awaiting == (user, password, syst)
    answers = client.receive_data(b"331 pw\r\n230 in\r\n215 UNIX Type: L8\r\n")
    assert [(a.command, a.reply.code) for a in answers] == [(user, 331), (password, 230), (syst, 215)]
    assert client.awaiting == ()


def test_preliminary_reply_keeps_the_command_open():
    client = ClientConversation()
    client.receive_data(b"220 ready\r\n")
    retr = Command("RETR", "f")
    client.send(retr)
    assert client.receive_data(b"150 opening\r\n") == [Answer(retr, Reply(150, ("opening",)))]
    assert client.awaiting == (retr,)
    assert client.receive_data(b"226 done\r\n") == [Answer(retr, Reply(226, ("done",)))]
    assert client.awaiting == ()


def test_abor_during_a_transfer():
    client = ClientConversation()
    client.receive_data(b"220 ready\r\n")
    retr, abor = Command("RETR", "f"), Command("ABOR")
    client.send(retr)
    client.receive_data(b"150 opening\r\n")
    client.send(abor)
    answers = client.receive_data(b"426 aborted\r\n226 ABOR ok\r\n")
    assert [(a.command, a.reply.code) for a in answers] == [(retr, 426), (abor, 226)]


def test_stat_during_a_transfer_pairs_with_stat():
    client = ClientConversation()
    client.receive_data(b"220 ready\r\n")
    retr, stat = Command("RETR", "f"), Command("STAT")
    client.send(retr)
    client.receive_data(b"150 opening\r\n")
    client.send(stat)
    answers = client.receive_data(b"213 42% done\r\n226 done\r\n")
    assert [(a.command, a.reply.code) for a in answers] == [(stat, 213), (retr, 226)]


def test_capture_that_starts_mid_session_still_pairs():
    client = ClientConversation()
    cwd, pwd = Command("CWD", "/pub"), Command("PWD")
    client.sent(cwd)
    client.sent(pwd)
    answers = client.receive_data(b'250 ok\r\n257 "/pub"\r\n')
    assert [(a.command, a.reply.code) for a in answers] == [(cwd, 250), (pwd, 257)]
    assert client.greeted


def test_spontaneous_421_answers_no_command():
    client = ClientConversation()
    client.receive_data(b"220 ready\r\n")
    client.send(Command("NOOP"))
    client.receive_data(b"200 ok\r\n")
    assert client.receive_data(b"421 Idle timeout.\r\n") == [Answer(None, Reply(421, ("Idle timeout.",)))]


def test_reply_split_across_chunks_gives_one_answer():
    client = ClientConversation()
    client.receive_data(b"220 ready\r\n")
    feat = Command("FEAT")
    client.send(feat)
    assert client.receive_data(b"211-Features:\r\n MD") == []
    assert client.receive_data(b"TM\r\n211 E") == []
    assert client.receive_data(b"nd\r\n") == [Answer(feat, Reply(211, ("Features:", " MDTM", "End")))]


def test_malformed_replies_are_reported_and_kept():
    client = ClientConversation()
    out = client.receive_data(b"garbage\r\n220 ready\r\n")
    assert out == [
        MalformedReply("line does not start with a three-digit reply code", b"garbage"),
        Answer(None, Reply(220, ("ready",))),
    ]
    assert client.malformed == [out[0]]


def test_send_refuses_injection_and_does_not_record_the_command():
    client = ClientConversation()
    with pytest.raises(CommandError):
        client.send(Command("DELE", "a\r\nRMD b"))
    assert client.awaiting == ()


# --- both sides together -----------------------------------------------------------------------------------


def test_server_and_client_agree_on_a_session_with_an_abort():
    srv, client = ServerConversation(), ClientConversation()
    answers = client.receive_data(srv.greet(READY))
    commands = [Command("USER", "bob"), Command("TYPE", "I"), Command("RETR", "big.iso")]
    srv.receive_data(b"".join(client.send(c) for c in commands))
    for code in (331, 200):
        srv.next_event()
        answers += client.receive_data(srv.reply(Reply(code)))
    retr = srv.next_event()
    answers += client.receive_data(srv.reply(Reply(150)))
    srv.receive_data(client.send(Command("ABOR")) + client.send(Command("QUIT")))
    srv.next_event()
    answers += client.receive_data(srv.reply(Reply(426), to=retr))
    answers += client.receive_data(srv.reply(Reply(226)))
    assert srv.next_event() == Command("QUIT")
    answers += client.receive_data(srv.reply(Reply(221)))
    assert srv.phase is Phase.CLOSED
    assert [(a.command and a.command.verb, a.reply.code) for a in answers] == [
        (None, 220), ("USER", 331), ("TYPE", 200), ("RETR", 150), ("RETR", 426), ("ABOR", 226), ("QUIT", 221),
    ]  # fmt: skip
    assert client.awaiting == ()

"""A UDP server that answers every datagram at once with its sender's address, from one socket (for the
datapath's namespaces and the e2e containers). Not socat's UDP6-RECVFROM,fork + SYSTEM:echo: its child for
a datagram gives the shell only socat's half-close time (-t, 0.5 s) to print the address, then exits without
answering, which a loaded machine exceeds; and it drops datagrams from a peer while that peer's child lives."""

UDP_PEER_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(4096)
    s.sendto(peer[0].encode() + b"\\n", peer)
"""

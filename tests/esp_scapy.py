"""scapy's ESP (an implementation independent of twnode) against twnode's GRE over ESP.

Run with Debian's python3 (python3-scapy): /usr/bin/python3 tests/esp_scapy.py CMD ...

  decrypt PCAP SRC SPI KEYHEX CIPHER
      Decrypt every ESP packet from SRC with SPI in PCAP; print one line per packet:
      seq=N iv=HEX next=47 inner=SRC>DST icmp=TYPE. Exit 1 if one does not decrypt.
  send SRC DST SPI KEYHEX CIPHER MODE:SEQ...
      Encrypt an ICMP echo 10.0.0.2 -> 10.0.0.1 in GRE for each MODE:SEQ and send it.
      MODE: ok, flip (one bit of the ciphertext flipped), trunc (3 bytes cut),
      badspi (encrypted under SPI+1).
  ivs PCAP SRC
      Print "SPI SEQ IV" (hex, decimal, hex) for every ESP packet from SRC.
  replay PCAP SRC MODE
      Send the last ESP packet from SRC in PCAP again: as captured (ok), with one bit
      of the ciphertext flipped (flip), with one bit of the sequence number flipped
      (flipseq) or with 3 bytes cut (trunc).
  replay-first PCAP SRC
      Send the first ESP packet from SRC in PCAP again, as captured.

KEYHEX is key || salt, as `ip xfrm state ... aead NAME 0xKEYSALT 128` takes it.
"""

import sys
import time

from scapy.all import GRE, ICMP, IP, Raw, rdpcap, send
from scapy.layers.ipsec import ESP, SecurityAssociation

ALGOS = {"chacha20-poly1305": "CHACHA20-POLY1305", "aes-256-gcm": "AES-GCM"}


def sa(spi, keyhex, cipher):
    key = bytes.fromhex(keyhex[2:] if keyhex.startswith("0x") else keyhex)
    return SecurityAssociation(
        ESP, spi=spi, crypt_algo=ALGOS[cipher], crypt_key=key, esn_en=True, esn=0
    )


def esp_packets(pcap, src):
    for p in rdpcap(pcap):
        if IP in p and p[IP].src == src and p[IP].proto == 50:
            yield p[IP]


def raw_ip(ip_bytes):
    """An IP packet from bytes, its length and checksum recomputed."""
    p = IP(bytes(ip_bytes))
    p.len = None
    p.chksum = None
    return IP(bytes(p))


def decrypt(pcap, src, spi, keyhex, cipher):
    s = sa(int(spi, 0), keyhex, cipher)
    n = 0
    for ip in esp_packets(pcap, src):
        esp = bytes(ip.payload)
        if int.from_bytes(esp[0:4], "big") != int(spi, 0):
            continue
        plain = s.decrypt(ip)
        gre = plain[GRE]
        inner = gre.payload
        icmp = inner[ICMP].type if ICMP in inner else "-"
        print(
            f"seq={int.from_bytes(esp[4:8], 'big')} iv={esp[8:16].hex()} "
            f"next={plain.proto} inner={inner.src}>{inner.dst} icmp={icmp}"
        )
        n += 1
    if n == 0:
        sys.exit(f"no ESP packet from {src} with SPI {spi} in {pcap}")


def send_modes(src, dst, spi, keyhex, cipher, specs):
    for spec in specs:
        mode, seq = spec.split(":")
        seq = int(seq)
        this_spi = int(spi, 0) + (1 if mode == "badspi" else 0)
        s = sa(this_spi, keyhex, cipher)
        inner = (
            IP(src="10.0.0.2", dst="10.0.0.1", ttl=64)
            / ICMP(type=8, id=0x5C5C, seq=seq)
            / Raw(b"scapy says hello over ESP")
        )
        pkt = IP(src=src, dst=dst) / GRE(proto=0x0800) / inner
        enc = s.encrypt(pkt, seq_num=seq, iv=seq.to_bytes(8, "big"))
        b = bytearray(bytes(enc))
        if mode == "flip":
            b[20 + 16 + 2] ^= 0x01
            out = IP(bytes(b))
        elif mode == "trunc":
            out = raw_ip(b[:-3])
        else:
            out = IP(bytes(b))
        send(out, verbose=0)
        time.sleep(0.2)


def ivs(pcap, src):
    for ip in esp_packets(pcap, src):
        esp = bytes(ip.payload)
        print(esp[0:4].hex(), int.from_bytes(esp[4:8], "big"), esp[8:16].hex())


def replay(pcap, src, mode):
    pkts = list(esp_packets(pcap, src))
    if not pkts:
        sys.exit(f"no ESP packet from {src} in {pcap}")
    b = bytearray(bytes(pkts[-1]))
    if mode == "flip":
        b[20 + 16 + 2] ^= 0x01
        out = IP(bytes(b))
    elif mode == "flipseq":
        # The top bit of the sequence number's high byte: a number never seen, so the
        # replay window lets it through to the ICV check, which fails.
        b[20 + 4] ^= 0x01
        out = IP(bytes(b))
    elif mode == "trunc":
        out = raw_ip(b[:-3])
    else:
        out = IP(bytes(b))
    send(out, verbose=0)


def replay_first(pcap, src):
    pkts = list(esp_packets(pcap, src))
    if not pkts:
        sys.exit(f"no ESP packet from {src} in {pcap}")
    send(IP(bytes(pkts[0])), verbose=0)


def main():
    cmd = sys.argv[1]
    if cmd == "decrypt":
        decrypt(*sys.argv[2:7])
    elif cmd == "send":
        send_modes(*sys.argv[2:7], sys.argv[7:])
    elif cmd == "ivs":
        ivs(*sys.argv[2:4])
    elif cmd == "replay":
        replay(*sys.argv[2:5])
    elif cmd == "replay-first":
        replay_first(*sys.argv[2:4])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

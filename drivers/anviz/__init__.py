"""Anviz TC_B terminals over RS232/RS485 (pyserial) and TCP."""

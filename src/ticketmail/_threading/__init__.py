"""The parts behind `ticketmail.threading`: its options and the capped candidates of a message.

Nothing here is public: import the names from `ticketmail.threading`.
"""

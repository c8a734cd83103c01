"""Content scoring before the send: SpamAssassin's spamd protocol (:mod:`.spamc`) and the
policy that turns a score into a verdict, with the sample and its cache key
(:mod:`.screen`). Sans-IO: the TCP exchange is :mod:`salvo.actors.content`'s.
"""

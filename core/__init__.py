"""Sans-IO logic of salvo: protocols, state machines and stores, with time passed in."""

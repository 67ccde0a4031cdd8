"""Label Studio: its REST client (:mod:`.client`) and the tool over it (:mod:`.tool`)."""

"""``al label``: the embedded loop with a person labeling in a Label Studio on this machine.

``items`` turns a folder of images (or the built-in demo set) into the loop's items, ``studio`` runs
Label Studio from its own venv on 127.0.0.1, and ``loop`` wires the product's services around them:
hand a batch to the person, take the answers back by the catch-up, retrain every N labels, score,
select and hand off the next batch with the model's guesses.
"""

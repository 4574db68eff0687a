"""Label Studio's answers (webhook + catch-up) and historical labeling exports (blob trigger)
-> labels -> retrain request."""

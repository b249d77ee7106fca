"""Weight saliency masks: which parameters an unlearning method may change (WAGLE and its peers)."""

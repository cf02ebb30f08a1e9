from clients import TorchServeClient

with TorchServeClient() as ts:  # `make serve`'s key from the repo, or TORCHSERVE_URL/_TOKEN/_KEY_FILE
    for p in ts.classify_image("samples/cat.jpg", topk=3):
        print(f"{p.label}: {p.probability:.2f}")

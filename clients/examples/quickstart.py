from clients import TorchServeClient

with TorchServeClient() as ts:  # env: TORCHSERVE_URL, TORCHSERVE_KEY_FILE or TORCHSERVE_TOKEN
    for p in ts.classify_image("samples/cat.jpg", "efficientnet_lite0", topk=3):
        print(f"{p.label}: {p.probability:.2f}")

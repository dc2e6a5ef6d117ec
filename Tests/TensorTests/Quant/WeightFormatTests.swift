import XCTest
import Tensor

final class WeightFormatTests: XCTestCase {
    func testBytesPerRow() {
        // int8: 34 bytes per 32 weights (Q8_0 block).
        XCTAssertEqual(WeightFormat.int8.bytesPerRow(cols: 32), 34)
        XCTAssertEqual(WeightFormat.int8.bytesPerRow(cols: 896), 28 * 34)
        // int4: 144 bytes per 256 weights; a truncated superblock is 16 header bytes + 16 per group.
        XCTAssertEqual(WeightFormat.int4.bytesPerRow(cols: 256), 144)
        XCTAssertEqual(WeightFormat.int4.bytesPerRow(cols: 4864), 19 * 144)
        XCTAssertEqual(WeightFormat.int4.bytesPerRow(cols: 896), 3 * 144 + 16 + 64)
        XCTAssertEqual(WeightFormat.int4.bytesPerRow(cols: 32), 32)
        XCTAssertEqual(WeightFormat.int4.bytesPerRow(cols: 96), 16 + 48)
        XCTAssertEqual(WeightFormat.f16.bytesPerRow(cols: 7), 14)
        XCTAssertEqual(WeightFormat.f32.bytesPerRow(cols: 7), 28)
        XCTAssertEqual(QuantizedMatrix.bytesPerRow(format: .int8, cols: 64), 68)
        XCTAssertEqual(WeightFormat.int4.bitsPerWeight(cols: 4864), 4.5)
        XCTAssertEqual(WeightFormat.int8.bitsPerWeight(cols: 4864), 8.5)
        // int5: 176 bytes per 256 weights; a truncated superblock is 48 header bytes + 16 per group.
        XCTAssertEqual(WeightFormat.int5.bytesPerRow(cols: 4864), 19 * 176)
        XCTAssertEqual(WeightFormat.int5.bytesPerRow(cols: 896), 3 * 176 + 48 + 64)
        XCTAssertEqual(WeightFormat.int5.bytesPerRow(cols: 32), 48 + 16)
        XCTAssertEqual(WeightFormat.int5.bitsPerWeight(cols: 4864), 5.5)
    }

    func testSupportsColumns() {
        XCTAssertTrue(WeightFormat.int8.supports(cols: 96))
        XCTAssertFalse(WeightFormat.int8.supports(cols: 100))
        XCTAssertFalse(WeightFormat.int4.supports(cols: 16))
        XCTAssertTrue(WeightFormat.f16.supports(cols: 100))
    }

    func testRawValuesAreTheWeightFileSpelling() {
        XCTAssertEqual(WeightFormat.allCases.map(\.rawValue), ["f32", "f16", "int8", "int5", "int4", "int6"])
    }

    func testTraits() {
        XCTAssertEqual(WeightFormat.int4.traits.groupSize, 32)
        XCTAssertEqual(WeightFormat.int4.traits.blockBytes, 144)
        XCTAssertEqual(WeightFormat.int8.traits.blockBytes, 34)
        XCTAssertEqual(WeightFormat.int5.traits.blockBytes, 176)
        XCTAssertEqual(WeightFormat.int5.traits.blockWeights, 256)
        XCTAssertFalse(WeightFormat.f32.traits.isQuantized)
    }
}
